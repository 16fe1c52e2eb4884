"""The timing stages: train.py's training step and test.py's multi-scale extraction, float32 and AMP."""

import time

import torch

from benchmarks.gpu_check.profiles import model_config
from benchmarks.gpu_check.report import OutOfTime, check_cosines


def train_speed_stage(seconds, report, profile, device):
    """Training images/s of train.py's step on random images: forward, scaled backward, optimizer step."""
    from utils.distributed import DistEnv

    deadline = time.monotonic() + seconds
    env = DistEnv(0, 1, torch.device(device))
    torch.backends.cudnn.benchmark = True  # as train.py sets it
    try:
        _time_training(report, profile, env, deadline)
    finally:
        torch.backends.cudnn.benchmark = False  # test.py's default, for the extraction timing


def _time_training(report, profile, env, deadline):
    for amp in profile.amps:
        if time.monotonic() > deadline:
            raise OutOfTime(f"out of time (before --amp {amp})")
        rate = _training_rate(profile, env, amp)
        report.timing(f"training step --amp {amp}", rate, "images/s", f"batch {profile.batch_size} at "
                      f"{profile.imsize} px, random images copied to the device each step")
        empty_cache(env.device.type)


def _training_rate(profile, env, amp):
    """Images/s of ``profile.speed_steps`` training steps after two warm-up steps."""
    from networks import Token
    from training.engine import forward_backward, memory_format, optimizer_step
    from training.optim import build_optimizer
    from training.options import get_args_parser
    from utils.training_log import StepMeter

    args = get_args_parser().parse_args([*profile.model, "--imsize", str(profile.imsize), "--amp", amp])
    torch.manual_seed(0)
    model = Token(model_config(profile), num_classes=100, pretrained=False)
    model = model.to(env.device, memory_format=memory_format(env.device)).train()
    optimizer = build_optimizer(model, args)
    scaler = torch.amp.GradScaler(env.device.type, enabled=amp == "fp16")
    images = torch.randn(profile.batch_size, 3, profile.imsize, profile.imsize)
    labels = torch.randint(0, 100, (profile.batch_size,))
    meter = StepMeter(env.device)
    for i in range(2 + profile.speed_steps):
        if i == 2:
            synchronize(env.device.type)
            start = time.perf_counter()
        forward_backward(model, model, images, labels, scaler, meter, args, env, i + 1)  # no DDP wrapper
        optimizer_step(model, optimizer, scaler, None)
        optimizer.zero_grad(set_to_none=True)
    synchronize(env.device.type)
    return profile.speed_steps * profile.batch_size / (time.perf_counter() - start)


def extract_speed_stage(seconds, report, checkpoint, profile, device):
    """Multi-scale extraction images/s, batch 1 and batched, float32 and AMP; AMP vs float32 descriptors."""
    from networks import Token
    from retrieval.extract import SCALES, extract, prepare_model
    from weights import load_token

    deadline = time.monotonic() + seconds
    trained = checkpoint is not None
    model = load_token(checkpoint) if trained else Token(model_config(profile), pretrained=False)
    model = prepare_model(model, torch.device(device))
    generator = torch.Generator().manual_seed(0)
    items = [(torch.randn(3, *profile.extract_shape, generator=generator), i) for i in range(profile.extract_images)]
    height, width = profile.extract_shape
    found = {}
    for amp in ((False, True) if device == "cuda" else (False,)):
        for batch in (1, profile.extract_batch):
            if time.monotonic() > deadline:
                raise OutOfTime(f"out of time (before AMP {amp}, batch {batch})")

            def run(images, amp=amp, batch=batch):
                return extract(model, images, model.config.descriptor_dim, torch.device(device), SCALES, batch, 0, amp)

            run(items[:batch])  # warm-up: kernel choices, allocator
            start = time.perf_counter()
            found[amp] = run(items)  # returns on the CPU: the device has finished
            rate = len(items) / (time.perf_counter() - start)
            report.timing(f"extraction {'AMP' if amp else 'float32'}, batch {batch}", rate, "images/s",
                          f"{model.config.backbone} Token, {width} x {height}, scales {len(SCALES)}, "
                          f"{'trained checkpoint' if trained else 'random weights'}")
    if True in found and trained:  # random weights overflow float16 in eval mode: compared only when trained
        check_cosines(report, f"extraction AMP vs float32 at {width} x {height}", found[True], found[False])


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def empty_cache(device):
    if device == "cuda":
        torch.cuda.empty_cache()
