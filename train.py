"""Train Token on GLDv2-clean with ArcFace, in one process or one process per GPU under torchrun.

    python train.py --data-root data/gldv2 --output-dir runs/token
    torchrun --nproc_per_node 4 train.py --data-root data/gldv2 --output-dir runs/token
    sh experiment.sh   # the paper's recipe: 4 GPUs, global batch 128, 512 px crops, 30 epochs, ResNet-101

Every epoch: train, then the val split's ArcFace loss (with the margin, as trained) and top-1/top-5 error of the
plain cosine logits (no margin: the class a retrieval descriptor is nearest to); a row in metrics.csv, the plot
training_curves.png, last.pth, and best.pth when the val top-1 error is the lowest so far.
"""

import argparse
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributed import ReduceOp
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from datasets.gldv2 import LandmarkImages, collate_skip_bad, load_gldv2, train_transform, val_transform
from networks import Token
from networks.backbone import RESNETS
from networks.token import AGGREGATIONS
from networks.tokenizer import TOKENIZERS
from utils.checkpoint import BEST, LAST, copy_checkpoint, find_resume, load_checkpoint, save_checkpoint
from utils.distributed import (
    ShardSampler,
    TrainSampler,
    all_reduce,
    broadcast_buffers,
    cleanup,
    init_distributed,
    main_process_first,
)
from utils.errors import InputError, fail_cleanly
from utils.metrics import StepMeter, plot_training_curves, write_metrics_row

log = logging.getLogger("train")

EXIT_DIVERGED = 3
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_BATCH = 2  # BatchNorm needs two images a batch in training mode
# Flags that may change when resuming (e.g. a lower --lr or --clip-grad after a NaN); all others must match.
MAY_CHANGE_ON_RESUME = {"epochs", "lr", "clip_grad", "amp", "resume", "output_dir", "data_root", "cache_dir", "workers",
                        "device", "save_every", "log_every", "pretrained", "backbone_weights"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append the default to each option's help, but for switches and options unset by default."""

    def _get_help_string(self, action):
        return action.help if action.nargs == 0 or action.default is None else super()._get_help_string(action)


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", default="data",
                      help="data root holding Google-landmark-v2/ (train_clean.csv or train.csv, images at "
                           "train/a/b/c/<id>.jpg), as test.py's; the Google-landmark-v2 folder itself works too")
    data.add_argument("--csv", default="train_clean.csv",
                      help="annotation file in the GLDv2 folder: train_clean.csv (landmark_id,images) or train.csv "
                           "(id,url,landmark_id)")
    data.add_argument("--cache-dir", default=None,
                      help="where the train/val split cache and the label map are kept (default: the GLDv2 folder)")
    data.add_argument("--val-fraction", type=float, default=0.2, help="share of each landmark's images for val")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the train/val split")
    data.add_argument("--imsize", type=int, default=512, help="training crop and val centre-crop size (pixels)")
    data.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                      help="DataLoader processes per rank (0: load images in the training process)")

    aug = parser.add_argument_group("augmentation (the released code's; each can be switched off)")
    aug.add_argument("--crop-scale", type=float, nargs=2, default=[0.2, 1.0], metavar=("MIN", "MAX"),
                     help="area range of the random resized crop")
    aug.add_argument("--no-random-crop", dest="random_crop", action="store_false",
                     help="resize the short side to --imsize and centre-crop instead of the random resized crop")
    aug.add_argument("--no-hflip", dest="hflip", action="store_false", help="no random horizontal flip")
    aug.add_argument("--color-jitter", type=float, nargs=4, default=[0.4, 0.4, 0.2, 0.1],
                     metavar=("B", "C", "S", "H"), help="colour jitter: brightness, contrast, saturation, hue")
    aug.add_argument("--jitter-p", type=float, default=0.8, help="probability of applying the colour jitter")
    aug.add_argument("--no-color-jitter", dest="jitter", action="store_false", help="no colour jitter")

    model = parser.add_argument_group("model (the ablations of the paper's Tables 3-6)")
    model.add_argument("--backbone", default="resnet101", choices=sorted(RESNETS), help="CNN trunk")
    model.add_argument("--dim", type=int, default=1024, help="channels d of the local features and tokens")
    model.add_argument("--out-dim", type=int, default=1024, help="size of the global descriptor")
    model.add_argument("--num-tokens", type=int, default=4, help="number of visual tokens L")
    model.add_argument("--heads", type=int, default=8, help="attention heads")
    model.add_argument("--lfsa-blocks", type=int, default=1, help="local feature self-attention blocks")
    model.add_argument("--refinement-blocks", type=int, default=2, help="refinement blocks N")
    model.add_argument("--tokenizer", default="attention", choices=TOKENIZERS, help="tokenizer kind (Table 5)")
    model.add_argument("--aggregation", default="tokens", choices=AGGREGATIONS,
                       help="tokens (the paper's), or SPoC / GeM pooling baselines (Table 3)")
    model.add_argument("--no-cross-attention", dest="cross_attention", action="store_false",
                       help="refinement blocks without cross-attention (Table 4)")
    model.add_argument("--no-self-attention", dest="self_attention", action="store_false",
                       help="refinement blocks without self-attention (Table 4)")
    model.add_argument("--dropout", type=float, default=0.1, help="dropout in attention and MLPs")
    model.add_argument("--drop-path", type=float, default=0.1, help="drop-path rate of every residual branch")
    model.add_argument("--margin", type=float, default=0.2, help="ArcFace margin m")
    model.add_argument("--scale", type=float, default=32.0, help="ArcFace scale")
    model.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                       help="random backbone instead of ImageNet weights")
    model.add_argument("--backbone-weights", metavar="PATH", default=None,
                       help="ImageNet weights file of the backbone (default: torchvision's, from the hub cache)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=30,
                       help="epochs; may be raised on --resume, the schedule then stretches to the new total")
    optim.add_argument("--batch-size", type=int, default=128,
                       help="GLOBAL batch of one optimizer step, split over processes and --update-every")
    optim.add_argument("--update-every", type=int, default=1,
                       help="gradient accumulation: micro-batches summed into one optimizer step")
    optim.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"),
                       help="SGD with momentum (the paper's), or AdamW (much faster from scratch: the CPU demo's)")
    optim.add_argument("--lr", type=float, default=0.01, help="peak learning rate (not scaled by the batch size)")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optim.add_argument("--no-nesterov", dest="nesterov", action="store_false", help="plain momentum, not Nesterov")
    optim.add_argument("--weight-decay", type=float, default=1e-4,
                       help="weight decay, not applied to biases and normalisation weights (1-d parameters)")
    optim.add_argument("--schedule", default="linear", choices=("linear", "cosine"),
                       help="per step: linear decay to 0 (the paper's), or warm-up then cosine to 0 (released code)")
    optim.add_argument("--warmup-epochs", type=float, default=5, help="cosine schedule: epochs of linear warm-up")
    optim.add_argument("--warmup-lr", type=float, default=1e-4, help="cosine schedule: learning rate at step 0")
    optim.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                       help="clip the gradient's global L2 norm to NORM (default: no clipping)")
    optim.add_argument("--amp", default="none", choices=tuple(AMP_DTYPES),
                       help="mixed precision: bf16, or fp16 with a gradient scaler")
    optim.add_argument("--seed", type=int, default=0, help="seed of the initialisation, data order and augmentation")

    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="auto: CUDA when available (one GPU per torchrun process), else CPU")
    run.add_argument("--output-dir", default="runs/token",
                     help="where last.pth, best.pth, metrics.csv and training_curves.png go")
    run.add_argument("--resume", metavar="PATH|auto", default=None,
                     help="continue from a checkpoint; auto: --output-dir/last.pth if it exists, else start fresh")
    run.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                     help="also save last.pth every STEPS optimizer steps within an epoch (0: at epoch ends only)")
    run.add_argument("--log-every", type=int, default=20, metavar="STEPS",
                     help="steps between progress-bar updates of loss and images/s (and checks for a NaN loss)")
    return parser


class Diverged(RuntimeError):
    """The loss or the weights became NaN or infinite."""


# ---------------------------------------------------------------- set-up


def check_args(args, env):
    """Raise an InputError for settings that cannot run; return the micro-batch each rank loads."""
    share = env.world_size * args.update_every
    if args.batch_size % share or args.batch_size < MIN_BATCH * share:
        raise InputError(f"--batch-size {args.batch_size} must be a multiple of {share} (processes x --update-every) "
                         f"and at least {MIN_BATCH * share}, so that each micro-batch has {MIN_BATCH}+ images")
    if args.epochs < 1 or args.lr <= 0 or args.log_every < 1 or args.save_every < 0:
        raise InputError("--epochs, --lr and --log-every must be positive, --save-every at least 0")
    if args.imsize < 32:
        raise InputError(f"--imsize {args.imsize}: at least 32 pixels (the backbone's stride)")
    if args.nesterov and args.momentum <= 0:
        raise InputError("Nesterov momentum needs --momentum > 0 (or pass --no-nesterov)")
    return args.batch_size // share


def check_resume_args(saved, current, path):
    """The run's settings must be the checkpoint's, but for MAY_CHANGE_ON_RESUME. A setting the checkpoint does not
    record (a flag added after it was written, such as --optimizer) counts as that flag's default."""
    saved = {**vars(get_args_parser().parse_args([])), **saved}
    changed = [key for key in current if key not in MAY_CHANGE_ON_RESUME and saved.get(key) != current[key]]
    if changed:
        raise InputError(f"--resume {path}: the checkpoint was trained with other settings: "
                         + ", ".join(f"{key} {saved.get(key)!r} (now {current[key]!r})" for key in changed))


def build_data(args, env, micro_batch):
    """The GLDv2 split and its train/val loaders; the train sampler yields whole optimizer steps only."""
    with main_process_first(env):  # rank 0 builds the split cache, the others read it
        split = load_gldv2(args.data_root, args.csv, args.split_seed, args.val_fraction, args.cache_dir)
    augment = train_transform(args.imsize, args.crop_scale if args.random_crop else None, args.hflip,
                              args.color_jitter if args.jitter else None, args.jitter_p)
    train_set = LandmarkImages(split.train, split.root, augment)
    val_set = LandmarkImages(split.val, split.root, val_transform(args.imsize))
    sampler = TrainSampler(train_set, env, args.seed, micro_batch * args.update_every)
    if not len(sampler):
        raise InputError(f"the train split has {len(train_set)} images, fewer than one step of --batch-size "
                         f"{args.batch_size} needs; lower --batch-size")
    loader = partial(DataLoader, batch_size=micro_batch, num_workers=args.workers, collate_fn=collate_skip_bad,
                     pin_memory=env.device.type == "cuda", persistent_workers=args.workers > 0)
    workers_seed = torch.Generator().manual_seed(derived_seed(args.seed, env.rank))  # augmentation in workers
    train_loader = loader(train_set, sampler=sampler, generator=workers_seed)
    val_loader = loader(val_set, sampler=ShardSampler(len(val_set), env))
    return split, train_loader, val_loader


def build_model(args, num_classes, env):
    """Token with an ArcFace head on ``env.device``; channels-last and SyncBatchNorm on GPUs."""
    torch.manual_seed(args.seed)
    with main_process_first(env):  # rank 0 downloads the ImageNet weights, the others read the cache
        try:
            model = Token(backbone=args.backbone, num_classes=num_classes, dim=args.dim, out_dim=args.out_dim,
                          num_tokens=args.num_tokens, heads=args.heads, lfsa_blocks=args.lfsa_blocks,
                          refinement_blocks=args.refinement_blocks, tokenizer=args.tokenizer,
                          aggregation=args.aggregation, cross_attention=args.cross_attention,
                          self_attention=args.self_attention, dropout=args.dropout, drop_path=args.drop_path,
                          arcface_margin=args.margin, arcface_scale=args.scale, pretrained=args.pretrained,
                          backbone_weights=args.backbone_weights)
        except ValueError as err:
            raise InputError(f"model settings: {err}") from None
    if env.distributed and env.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(env.device, memory_format=memory_format(env.device))


def memory_format(device):
    return torch.channels_last if device.type == "cuda" else torch.preserve_format


def build_optimizer(model, args):
    """SGD or AdamW (decoupled decay); weight decay on weight matrices, kernels, token queries and class weights,
    not on 1-d parameters (biases, BatchNorm/LayerNorm weights)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 1]},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                           weight_decay=args.weight_decay)


def lr_factor(step, total_steps, schedule, warmup_steps, warmup_start):
    """The learning rate at optimizer ``step`` as a fraction of --lr.

    linear: 1 - step / total_steps. cosine: from ``warmup_start`` linearly to 1 over ``warmup_steps``, then
    half a cosine to 0 at ``total_steps``.
    """
    if schedule == "linear":
        return max(0.0, 1.0 - step / total_steps)
    if step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def derived_seed(*keys):
    """A well-mixed 32-bit seed for the tuple of integers ``keys``."""
    return int(np.random.SeedSequence(keys).generate_state(1)[0])


def seed_rng(seed, rank, step):
    """Reseed the global RNG (augmentation with --workers 0, dropout, drop-path) from (seed, rank, step).

    Done at every epoch start and after every mid-epoch checkpoint, so a resumed run draws what the
    uninterrupted run drew.
    """
    torch.manual_seed(derived_seed(seed, rank, step))


def require_finite(model, step):
    """Raise ``Diverged`` (on every rank) unless all of the model's float tensors are finite."""
    finite = torch.stack([t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point()]).all()
    if not all_reduce(finite.int(), op=ReduceOp.MIN):
        raise Diverged(f"the weights are not finite after step {step}")


# ---------------------------------------------------------------- loop


def forward_backward(ddp_model, images, labels, scaler, meter, args, env, step):
    """One micro-batch of optimizer step ``step``: forward, scaled backward. Returns whether gradients were made.

    A batch left with fewer than two readable images is skipped; under DDP the other ranks wait for this one's
    gradients, so it takes part with a blank batch whose loss is multiplied by 0.
    """
    usable = len(labels) >= MIN_BATCH
    if not usable:
        log.warning("step %d: skipping a batch with %d readable image(s)", step, len(labels))
        if not env.distributed:
            return False
        images = torch.zeros(MIN_BATCH, 3, args.imsize, args.imsize)
        labels = torch.zeros(MIN_BATCH, dtype=torch.int64)
    images = images.to(env.device, non_blocking=True, memory_format=memory_format(env.device))
    labels = labels.to(env.device, non_blocking=True)
    with torch.autocast(env.device.type, dtype=AMP_DTYPES[args.amp], enabled=args.amp != "none"):
        loss, _ = ddp_model(images, labels)
    if usable:
        meter.update(loss, len(labels), step)
    scaler.scale(loss * (float(usable) / args.update_every)).backward()
    return True


def optimizer_step(model, optimizer, scaler, clip_grad):
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()


def train_one_epoch(model, ddp_model, loader, optimizer, scheduler, scaler, args, env, epoch, step,
                    steps_per_epoch, save_last):
    """Train from global optimizer ``step`` to the end of ``epoch``; return the step reached and epoch statistics.

    Statistics stay on the device between syncs (every --log-every steps), where a non-finite loss stops the run.
    """
    ddp_model.train()
    meter = StepMeter(env.device)
    end = (epoch + 1) * steps_per_epoch
    bar = tqdm(total=steps_per_epoch, initial=step - epoch * steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}",
               disable=not env.is_main, dynamic_ncols=True, mininterval=1.0)
    trained = False  # whether any micro-batch of the current optimizer step made gradients
    for i, (images, labels, skipped) in enumerate(loader):
        meter.count_skipped(skipped)
        last_micro = (i + 1) % args.update_every == 0
        with ddp_model.no_sync() if env.distributed and not last_micro else nullcontext():
            trained |= forward_backward(ddp_model, images, labels, scaler, meter, args, env, step + 1)
        if not last_micro:
            continue
        if trained:
            optimizer_step(model, optimizer, scaler, args.clip_grad)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step, trained = step + 1, False
        bar.update()
        mid_epoch_save = args.save_every and step % args.save_every == 0 and step < end
        if step % args.log_every == 0 or mid_epoch_save:
            sync_and_check(meter, bar, optimizer)
        if mid_epoch_save:
            save_last(step)
            seed_rng(args.seed, env.rank, step)
    sync_and_check(meter, bar, optimizer)
    bar.close()
    return step, meter.epoch_summary()


def sync_and_check(meter, bar, optimizer):
    """Reduce the step statistics over ranks, stop on a non-finite loss, refresh the progress bar."""
    window = meter.sync()
    if window["first_bad_step"] is not None:
        raise Diverged(f"the loss is not finite (NaN or inf) at step {window['first_bad_step']}")
    if not math.isnan(window["loss"]):
        bar.set_postfix(loss=f"{window['loss']:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}",
                        img_s=f"{window['images_per_s']:.1f}")


@torch.no_grad()
def evaluate(model, loader, args, env):
    """Val ArcFace loss (with the margin) and top-1/top-5 error in % of the cosine logits, over all ranks.

    Each rank evaluates its own shard (no padding duplicates) with rank 0's buffers; sums and counts are
    all-reduced once at the end.
    """
    model.eval()
    broadcast_buffers(model)
    k = min(5, model.arcface.weight.shape[0])
    sums = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss, top-1 hits, top-k hits
    images_seen = images_skipped = 0
    for images, labels, skipped in tqdm(loader, desc="val", leave=False, disable=not env.is_main,
                                        dynamic_ncols=True, mininterval=1.0):
        images_skipped += skipped
        images_seen += len(labels)
        if not len(labels):
            continue
        images = images.to(env.device, non_blocking=True, memory_format=memory_format(env.device))
        labels = labels.to(env.device, non_blocking=True)
        with torch.autocast(env.device.type, dtype=AMP_DTYPES[args.amp], enabled=args.amp != "none"):
            descriptors = model.forward_test(images)
            margin_logits = model.arcface(descriptors, labels)
            cosine = F.linear(descriptors, F.normalize(model.arcface.weight, dim=-1))
        hits = cosine.topk(k, dim=1).indices == labels[:, None]
        loss = F.cross_entropy(margin_logits.float(), labels, reduction="sum")
        sums += torch.stack([loss.double(), hits[:, 0].sum().double(), hits.sum().double()])
    counts = torch.tensor([images_seen, images_skipped], dtype=torch.float64, device=env.device)
    loss, top1, topk, n, skipped = all_reduce(torch.cat([sums, counts])).tolist()
    n = n or math.nan  # no readable val image: NaN metrics
    return {"val_loss": loss / n, "val_top1_err": 100 * (1 - top1 / n), "val_top5_err": 100 * (1 - topk / n),
            "skipped_images": int(skipped)}


def checkpoint(model, optimizer, scheduler, scaler, args, step, steps_per_epoch, best_top1_err):
    """What last.pth / best.pth hold: tensors and plain data only, readable with ``weights_only=True``."""
    return {"epoch": step // steps_per_epoch, "step": step, "steps_per_epoch": steps_per_epoch,
            "state_dict": model.state_dict(), "model_config": model.config, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "args": vars(args),
            "best_top1_err": best_top1_err}


def restore(resumed, path, model, optimizer, scaler, steps_per_epoch, lr):
    """Load a checkpoint's weights, optimizer and fp16 scaler state; return its (step, best_top1_err).

    The schedule restarts from ``lr`` (this run's --lr) at the checkpoint's step.
    """
    if resumed["steps_per_epoch"] != steps_per_epoch:
        raise InputError(f"--resume {path}: {resumed['steps_per_epoch']} steps an epoch there, {steps_per_epoch} "
                         "now: the train split or the batch size changed")
    model.load_state_dict(resumed["state_dict"])
    optimizer.load_state_dict(resumed["optimizer"])
    for group in optimizer.param_groups:
        group["initial_lr"] = lr  # LambdaLR's base
    if scaler.is_enabled() and resumed["scaler"]:  # empty when saved without fp16
        scaler.load_state_dict(resumed["scaler"])
    return resumed["step"], resumed["best_top1_err"]


# ---------------------------------------------------------------- main


def train(args, env):
    micro_batch = check_args(args, env)
    output_dir = Path(args.output_dir)
    resume_path = find_resume(args.resume, output_dir)
    resumed = load_checkpoint(resume_path) if resume_path else None
    if resumed:
        check_resume_args(resumed["args"], vars(args), resume_path)

    split, train_loader, val_loader = build_data(args, env, micro_batch)
    steps_per_epoch = len(train_loader) // args.update_every
    total_steps = args.epochs * steps_per_epoch
    output_dir.mkdir(parents=True, exist_ok=True)

    model = build_model(args, split.num_classes, env)
    optimizer = build_optimizer(model, args)
    scaler = torch.amp.GradScaler(env.device.type, enabled=args.amp == "fp16")
    step, best_top1_err = 0, math.inf
    if resumed:
        step, best_top1_err = restore(resumed, resume_path, model, optimizer, scaler, steps_per_epoch, args.lr)
        del resumed  # a CPU copy of the weights and optimizer state
    factor = partial(lr_factor, total_steps=total_steps, schedule=args.schedule,
                     warmup_steps=round(args.warmup_epochs * steps_per_epoch), warmup_start=args.warmup_lr / args.lr)
    scheduler = LambdaLR(optimizer, factor, last_epoch=step - 1)  # the schedule at ``step`` for this --epochs
    ddp_model = model
    if env.distributed:
        ddp_model = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    log.info("%d train / %d val images of %d landmarks; %d process(es) on %s, micro-batch %d x %d accumulated: "
             "%d steps an epoch, %d in all%s", len(split.train), len(split.val), split.num_classes, env.world_size,
             env.device.type, micro_batch, args.update_every, steps_per_epoch, total_steps,
             f"; resuming {resume_path} at step {step}" if resume_path else "")

    def save(step, is_best=False):
        require_finite(model, step)
        if env.is_main:
            state = checkpoint(model, optimizer, scheduler, scaler, args, step, steps_per_epoch, best_top1_err)
            save_checkpoint(state, output_dir / LAST)
            if is_best:
                copy_checkpoint(output_dir / LAST, output_dir / BEST)

    for epoch in range(step // steps_per_epoch, args.epochs):
        started = time.perf_counter()
        train_loader.sampler.set_epoch(epoch, start=(step - epoch * steps_per_epoch) * micro_batch * args.update_every)
        seed_rng(args.seed, env.rank, step)
        step, stats = train_one_epoch(model, ddp_model, train_loader, optimizer, scheduler, scaler, args, env, epoch,
                                      step, steps_per_epoch, save)
        val = evaluate(model, val_loader, args, env)
        is_best = val["val_top1_err"] < best_top1_err
        if is_best:
            best_top1_err = val["val_top1_err"]
        row = {**stats, **val, "epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "skipped_images": stats["skipped_images"] + val["skipped_images"],
               "time": round(time.perf_counter() - started, 2)}
        if env.is_main:
            write_metrics_row(output_dir / "metrics.csv", row)
            plot_training_curves(output_dir / "metrics.csv", output_dir / "training_curves.png")
        save(step, is_best)
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val top-1/top-5 error %.2f/%.2f %%, lr %.3g, "
                 "%.1f images/s, %d skipped images, %.0f s", epoch + 1, args.epochs, row["train_loss"],
                 row["val_loss"], row["val_top1_err"], row["val_top5_err"], row["lr"], row["images_per_s"],
                 row["skipped_images"], row["time"])


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    env = init_distributed(args.device)
    rank = f"[rank {env.rank}] " if env.distributed else ""
    logging.basicConfig(level=logging.INFO if env.is_main else logging.WARNING,
                        format=f"%(asctime)s {rank}%(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        with logging_redirect_tqdm():
            train(args, env)
    except Diverged as err:
        last = Path(args.output_dir) / LAST
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved"
        if env.is_main:
            print(f"error: {err}; stopped without saving, {kept} (--resume it with a lower --lr or with "
                  "--clip-grad)", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
