"""The prepared GPU check (issue #14): every CUDA path of train.py and test.py, and their speed, in one command.

    python -m benchmarks.gpu_check --out runs/benchmarks/gpu_check.json   # a CUDA machine: at most --budget-s
    python -m benchmarks.gpu_check --device cpu --smoke                   # every stage, tiny, on the CPU (CI)

Without CUDA (and without ``--device cpu``) it prints one line saying so and exits 0. Stages, in order, each
given what is left of ``--budget-s``; one that cannot start or finish in time is recorded as "skipped: out of
time" (its subprocesses are stopped):

- ``world``: a small synthetic world (a GLDv2-clean training set and the revisitop set ``synthetic``) in a
  temporary folder. Random initialisation throughout (``--no-pretrained``): GPU machines may be offline.
- ``train-bf16``, ``resume-bf16``, ``train-fp16``, ``resume-fp16``: train.py under ``torchrun --nproc_per_node 1``
  (R101-Token, 512 px crops, channels-last, cuDNN autotuning), one epoch with ``--amp``; the epoch's train and
  val loss must be finite. Then ``--resume auto --epochs 2``: the log must say it resumed at the saved step and
  metrics.csv must end at twice that step. One torchrun process makes no process group, so:
- ``ddp``: train.py's training (``training.run.train``) in a one-process group that counts as distributed: NCCL
  (gloo on the CPU), DistributedDataParallel, SyncBatchNorm (converted; with one rank PyTorch computes it as
  BatchNorm, so its cross-GPU reduction needs 2+ GPUs), the barriers and collectives of training and val.
- ``test-amp``: test.py ``--amp`` on the ``synthetic`` set with the fp16 run's checkpoint; every query and
  database descriptor it stores (``features/*.npy``) must have a cosine of at least 0.999 to the float32 one
  that ``retrieval.extract`` computes here. test.py needs faiss; where it is missing the stage says so.
- ``train-speed``: training images/s of train.py's step (``training.engine.forward_backward``), bf16 and fp16.
- ``extract-speed``: multi-scale extraction (``retrieval.extract.extract``, test.py's) of R101 at 1024 x 768,
  images/s at batch 1 and batched, with and without AMP; the AMP descriptors' cosine to the float32 ones.

One JSON (``--out``) holds every check (pass / fail / skipped and its value), every timing and every stage's
log tail; a short table is printed. Exit status 1 when a check failed.
"""

import argparse
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import OUT_DIR, machine, table, write_json

ROOT = Path(__file__).resolve().parents[1]
MIN_COSINE = 0.999
AMPS = ("bf16", "fp16")
KILL_GRACE_S = 10  # a stopped stage's seconds to end its processes before they are killed


@dataclass(frozen=True)
class Profile:
    """The sizes of one kind of run: the GPU check's or the CPU smoke run's."""

    model: list  # train.py model flags
    imsize: int  # training crops
    batch_size: int
    world: dict  # datasets.synthetic.ensure_generated keywords
    test_imsize: int
    extract_shape: tuple  # (H, W) of the extraction timing images
    extract_images: int
    extract_batch: int
    speed_steps: int  # timed training steps (after two warm-up steps)
    amps: tuple = AMPS  # the --amp settings trained with
    stage_s: dict = field(default_factory=dict)  # the most seconds a stage may take


GPU = Profile(model=["--backbone", "resnet101"], imsize=512, batch_size=16,
              world=dict(num_train_landmarks=16, images_per_landmark=(10, 10), num_test_landmarks=3,
                         db_views_per_landmark=(4, 6), num_distractors=10),
              test_imsize=1024, extract_shape=(768, 1024), extract_images=16, extract_batch=8, speed_steps=10,
              stage_s={"world": 60, "train": 75, "ddp": 75, "test": 60, "speed": 45})
SMOKE = Profile(model=["--backbone", "resnet18", "--dim", "32", "--out-dim", "32", "--heads", "4"], imsize=32,
                batch_size=4, world=dict(num_train_landmarks=4, images_per_landmark=(3, 3), num_test_landmarks=2,
                                         queries_per_landmark=(1, 1), db_views_per_landmark=(3, 3), num_distractors=2,
                                         image_size=(96, 96)),
                test_imsize=64, extract_shape=(48, 64), extract_images=4, extract_batch=2, speed_steps=1,
                amps=("none",),  # CPU autocast is slow without bf16 hardware, and test.py's AMP is CUDA only
                stage_s={"world": 120, "train": 120, "ddp": 120, "test": 120, "speed": 120})


class OutOfTime(Exception):
    """A stage that could not start, or was stopped, because the budget ran out."""


class Report:
    """Checks, timings and stages as they come, and the time left of the budget."""

    def __init__(self, budget_s):
        self.deadline = time.monotonic() + budget_s
        self.checks, self.timings, self.stages = [], [], []

    def left(self):
        return self.deadline - time.monotonic()

    def check(self, name, passed, value, expected, detail=""):
        self.checks.append({"name": name, "status": "pass" if passed else "fail", "value": value,
                            "expected": expected, "detail": detail})
        return passed

    def timing(self, name, value, unit, detail=""):
        self.timings.append({"name": name, "value": value, "unit": unit, "detail": detail})

    def run_stage(self, name, cap_s, fn, *args):
        """``fn(seconds it may take, *args)``, recorded as a stage; its result, or None if it did not finish."""
        start = time.monotonic()
        entry = {"name": name, "status": "done", "detail": ""}
        try:
            room = self.left() - KILL_GRACE_S  # what stopping a late stage's processes may still take
            if room < 1:
                raise OutOfTime("out of time (not started)")
            return fn(min(cap_s, room), *args)
        except OutOfTime as err:
            entry.update(status="skipped", detail=f"skipped: {err}")
        except Exception as err:  # noqa: BLE001 (a broken stage is a failed check; the other stages still run)
            entry.update(status="failed", detail=f"{type(err).__name__}: {err}")
            self.check(name, False, None, "the stage runs", entry["detail"])
        finally:
            entry["seconds"] = round(time.monotonic() - start, 1)
            self.stages.append(entry)
            print(f"[{entry['seconds']:6.1f} s] {name}: {entry['detail'] or entry['status']}", flush=True)
        return None


def run_command(cmd, log, timeout_s):
    """Run ``cmd`` in the repository root in its own process group, output to ``log``; its exit code. At the
    timeout it is stopped with its workers (SIGTERM, which torchrun passes on to the workers it started in
    sessions of their own, then SIGKILL) and ``OutOfTime`` raised."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise OutOfTime(f"out of time (stopped after {timeout_s:.0f} s; log {log})") from None


def tail(log, lines=6):
    return " | ".join(Path(log).read_text(errors="replace").strip().splitlines()[-lines:])


def read_metrics(run_dir):
    path = Path(run_dir) / "metrics.csv"
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def cosines(a, b):
    """Row-wise cosine of two (n, d) arrays; NaN where a row is not finite or has no length."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.where(np.isfinite(cos), cos, np.nan)


def check_cosines(report, name, a, b, detail=""):
    """Check that every row of ``a`` has cosine >= MIN_COSINE to its row of ``b`` (same shape, all finite)."""
    if np.shape(a) != np.shape(b):
        return report.check(name, False, None, f"equal shapes, cosine >= {MIN_COSINE}",
                            f"shapes {np.shape(a)} and {np.shape(b)}")
    cos = cosines(a, b)
    worst = float(np.nanmin(cos)) if np.isfinite(cos).any() else math.nan
    bad = int((~(cos >= MIN_COSINE)).sum())  # NaN counts as bad
    return report.check(name, bad == 0, worst, f"min cosine >= {MIN_COSINE}",
                        f"{bad} of {len(cos)} rows below or not finite{'; ' + detail if detail else ''}")


# ------------------------------------------------------------------------------------------------------- stages


def make_world(seconds, root, profile, workers):
    from datasets.synthetic import ensure_generated

    return ensure_generated(root, seed=0, progress=False, workers=workers, **profile.world)


def model_config(profile):
    """The TokenConfig of the profile's train.py model flags."""
    from networks import TokenConfig
    from training.options import get_args_parser

    return TokenConfig.from_args(get_args_parser().parse_args(profile.model))


def train_flags(world, run_dir, profile, amp, device, workers):
    return ["--data-root", str(world.root), "--output-dir", str(run_dir), *profile.model, "--no-pretrained",
            "--imsize", str(profile.imsize), "--batch-size", str(profile.batch_size), "--epochs", "1",
            "--amp", amp, "--device", device, "--workers", str(workers), "--log-every", "1", "--no-progress"]


def torchrun(flags):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "train.py", *flags]


def check_epochs(report, name, run_dir, log, epochs):
    """metrics.csv has ``epochs`` rows with finite train and val losses; the last row's step."""
    rows = read_metrics(run_dir)
    losses = [(row["train_loss"], row["val_loss"]) for row in rows]
    report.check(f"{name}: finite loss", len(rows) == epochs and all(map(math.isfinite, sum(losses, ()))),
                 losses, f"{epochs} epoch row(s), finite train and val loss", tail(log, 2))
    report.timing(f"{name}: train.py images/s", rows[-1]["images_per_s"], "images/s",
                  "metrics.csv, the epoch's images over its wall time (loader start and cuDNN autotuning included)")
    return int(rows[-1]["step"])


def train_stage(seconds, report, flags, run_dir, name):
    log = Path(run_dir).with_suffix(".log")
    code = run_command(torchrun(flags), log, seconds)
    if not report.check(f"{name}: exit 0", code == 0, code, 0, tail(log)):
        return None
    steps = check_epochs(report, name, run_dir, log, epochs=1)
    report.check(f"{name}: steps", steps > 0, steps, "> 0 optimizer steps in the epoch")
    return steps


def resume_stage(seconds, report, flags, run_dir, name, saved_step):
    log = Path(run_dir).with_name(f"{Path(run_dir).name}-resume.log")
    code = run_command(torchrun([*flags, "--epochs", "2", "--resume", "auto"]), log, seconds)  # the last flag counts
    if not report.check(f"{name}: exit 0", code == 0, code, 0, tail(log)):
        return
    found = re.search(r"resuming \S+ at step (\d+)", Path(log).read_text())
    resumed_at = int(found.group(1)) if found else None
    report.check(f"{name}: resumed at the saved step", resumed_at == saved_step, resumed_at, saved_step)
    steps = check_epochs(report, name, run_dir, log, epochs=2)
    report.check(f"{name}: continued to step", steps == 2 * saved_step, steps, 2 * saved_step)


def one_rank_train(argv):
    """train.py's training (``training.run.train``) in a process group of one rank that counts as distributed:
    DDP, SyncBatchNorm on CUDA, and every collective and barrier; run by the ``ddp`` stage in a subprocess."""
    import logging

    import torch.distributed as dist

    from training.options import get_args_parser
    from training.run import train
    from utils.distributed import DistEnv, resolve_device

    class OneRankGroup(DistEnv):
        distributed = True

    *argv, store = argv
    args = get_args_parser().parse_args(argv)
    device = resolve_device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=Path(store).as_uri(), rank=0, world_size=1,
                            device_id=device if cuda else None)
    try:
        train(args, OneRankGroup(0, 1, device))
        print(f"one-rank group: backend {dist.get_backend()}", flush=True)
    finally:
        dist.destroy_process_group()


def ddp_stage(seconds, report, flags, run_dir):
    log = Path(run_dir).with_suffix(".log")
    store = Path(run_dir).with_suffix(".store")
    cmd = [sys.executable, "-c", "import sys; from benchmarks.gpu_check import one_rank_train; "
           "one_rank_train(sys.argv[1:])", *flags, str(store)]
    code = run_command(cmd, log, seconds)
    if report.check("ddp: exit 0", code == 0, code, 0, tail(log)):
        found = re.search(r"one-rank group: backend (\w+)", Path(log).read_text())
        expected = "nccl" if flags[flags.index("--device") + 1] == "cuda" else "gloo"
        report.check("ddp: backend", found and found.group(1) == expected, found and found.group(1), expected)
        check_epochs(report, "ddp", run_dir, log, epochs=1)


def test_stage(seconds, report, checkpoint, world, work, profile, device, workers):
    """test.py --amp on the synthetic set; its stored descriptors against float32 ones extracted here."""
    import importlib.util

    if importlib.util.find_spec("faiss") is None:
        raise OutOfTime("faiss is not installed here (test.py needs it; README, 'GPU check')")
    amp = device == "cuda"  # test.py --amp is CUDA only: the smoke run compares float32 with float32
    out = work / "test-amp"
    log = out.with_suffix(".log")
    cmd = [sys.executable, "test.py", "--checkpoint", str(checkpoint), "--data-root", str(world.root),
           "--datasets", world.test_name, "--imsize", str(profile.test_imsize), "--device", device,
           "--workers", str(workers), "--output-dir", str(out), "--no-progress", *(["--amp"] if amp else [])]
    code = run_command(cmd, log, seconds)
    if not report.check("test.py: exit 0", code == 0, code, 0, tail(log)):
        return
    results = json.loads((out / "results.json").read_text())
    found = results["datasets"][world.test_name]
    mean_ap = found["runs"]["exact"]["medium"]["mAP"]
    report.check("test.py: results.json", results["amp"] == amp and math.isfinite(mean_ap),
                 {"amp": results["amp"], "medium mAP": mean_ap}, {"amp": amp, "medium mAP": "finite"})
    for part, ms in found["extraction_ms_per_image"].items():
        report.timing(f"test.py{' --amp' if amp else ''}: {part} extraction", ms, "ms/image",
                      f"--imsize {profile.test_imsize}, 3 scales, small synthetic images (never enlarged)")
    for part, reference in float32_descriptors(checkpoint, world, profile, device, workers).items():
        stored = np.load(out / "features" / f"{world.test_name}_{part}.npy")
        check_cosines(report, f"test.py{' --amp' if amp else ''} vs float32: {part} descriptors", stored, reference)


def float32_descriptors(checkpoint, world, profile, device, workers):
    """``{"query", "db"}``: float32 descriptors of the test set as test.py extracts them (same flags but --amp)."""
    from datasets.revisitop import RevisitopImages, load_revisitop
    from retrieval.evaluation import EvalSettings
    from retrieval.extract import extract, prepare_model
    from weights import load_token

    settings = EvalSettings(checkpoint=str(checkpoint), data_root=str(world.root), imsize=profile.test_imsize)
    dataset = load_revisitop(world.root, world.test_name)
    model = prepare_model(load_token(checkpoint), torch.device(device))
    images = {"query": RevisitopImages(dataset.query_paths(), settings.imsize, dataset.bbxs()),
              "db": RevisitopImages(dataset.db_paths(), settings.imsize)}
    return {part: extract(model, found, model.config.descriptor_dim, torch.device(device), settings.scales,
                          settings.batch_size, workers) for part, found in images.items()}


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


# --------------------------------------------------------------------------------------------------------- main


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default=None, help="JSON report (default runs/benchmarks/gpu_check[-smoke].json)")
    parser.add_argument("--budget-s", type=float, default=300,
                        help="seconds for all stages; a stage that would exceed it is stopped and marked skipped")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda: the GPU check (exits 0 with one line where there is no CUDA); cpu: with --smoke")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (resnet18, 64 px, 2 training steps, gloo on the CPU): every stage end to end")
    parser.add_argument("--workers", type=int, default=None,
                        help="data-loading processes of train.py and test.py (default: min(8, cores); 0 --smoke)")
    parser.add_argument("--work-dir", default=None,
                        help="keep the world, runs and logs here (default: a temporary folder, deleted at the end)")
    return parser


def print_summary(report):
    if report.checks:
        print(table(["check", "status", "value", "expected"],
                    [[c["name"], c["status"], _short(c["value"]), _short(c["expected"])] for c in report.checks]))
    if report.timings:
        print(table(["timing", "value", "unit"],
                    [[t["name"], f"{t['value']:.2f}", t["unit"]] for t in report.timings]))


def _short(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing checked (run it on a GPU machine; --device cpu --smoke "
              "runs every stage on the CPU)")
        return 0
    if args.device == "cpu" and not args.smoke:
        get_args_parser().error("--device cpu runs only with --smoke (the GPU sizes would take hours on a CPU)")
    profile = SMOKE if args.smoke else GPU
    workers = args.workers if args.workers is not None else (0 if args.smoke else min(8, os.cpu_count() or 1))
    report = Report(args.budget_s)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(args.work_dir or tmp).resolve()  # the subprocesses run in the repository root
        work.mkdir(parents=True, exist_ok=True)
        world = report.run_stage("world", profile.stage_s["world"], make_world, work / "world", profile, workers)
        checkpoints = {}
        for amp in profile.amps:
            run_dir = work / f"train-{amp}"
            flags = train_flags(world, run_dir, profile, amp, args.device, workers) if world else None
            steps = report.run_stage(f"train-{amp}", profile.stage_s["train"], _needs(world, train_stage), report,
                                     flags, run_dir, f"train --amp {amp}")
            report.run_stage(f"resume-{amp}", profile.stage_s["train"], _needs(steps, resume_stage), report, flags,
                             run_dir, f"resume --amp {amp}", steps)
            if steps:
                checkpoints[amp] = run_dir / "last.pth"
        ddp_flags = train_flags(world, work / "ddp", profile, profile.amps[-1], args.device, workers) if world else None
        report.run_stage("ddp", profile.stage_s["ddp"], _needs(world, ddp_stage), report, ddp_flags, work / "ddp")
        checkpoint = checkpoints.get(profile.amps[-1]) or next(iter(checkpoints.values()), None)
        report.run_stage("test-amp", profile.stage_s["test"], _needs(checkpoint, test_stage), report, checkpoint,
                         world, work, profile, args.device, workers)
        report.run_stage("train-speed", profile.stage_s["speed"], train_speed_stage, report, profile, args.device)
        report.run_stage("extract-speed", profile.stage_s["speed"], extract_speed_stage, report, checkpoint, profile,
                         args.device)
    failed = [c["name"] for c in report.checks if c["status"] == "fail"]
    skipped = [s["name"] for s in report.stages if s["status"] == "skipped"]
    result = {"benchmark": "gpu_check", "smoke": args.smoke, "device": args.device, "budget_s": args.budget_s,
              "seconds": round(time.time() - started, 1), "passed": not failed, "skipped": skipped,
              "checks": report.checks, "timings": report.timings, "stages": report.stages, "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = write_json(args.out or OUT_DIR / f"gpu_check{'-smoke' if args.smoke else ''}.json", result)
    print_summary(report)
    verdict = [f"FAILED: {', '.join(failed)}" if failed else f"{len(report.checks)} checks passed"]
    verdict += [f"skipped: {', '.join(skipped)}"] if skipped else []
    print(f"{'; '.join(verdict)}; wrote {out} ({result['seconds']:.0f} s of a {args.budget_s:.0f} s budget)")
    return 1 if failed else 0


def _needs(value, stage):
    """``stage``, or a stage that says why it cannot run when ``value`` (the world, a checkpoint) is missing."""
    if value:
        return stage

    def missing(seconds, *args):
        raise OutOfTime("an earlier stage it needs did not finish")
    return missing


if __name__ == "__main__":
    sys.exit(main())
