"""The stages that run train.py: the world it trains on, torchrun training and resume at each --amp, and the
one-rank DDP group."""

import csv
import math
import re
import sys
from pathlib import Path

import torch

from benchmarks.gpu_check.report import run_command, tail


def make_world(seconds, root, profile, workers):
    from datasets.synthetic import ensure_generated

    return ensure_generated(root, seed=0, progress=False, workers=workers, **profile.world)


def train_flags(world, run_dir, profile, amp, device, workers):
    return ["--data-root", str(world.root), "--output-dir", str(run_dir), *profile.model, "--no-pretrained",
            "--imsize", str(profile.imsize), "--batch-size", str(profile.batch_size), "--epochs", "1",
            "--amp", amp, "--device", device, "--workers", str(workers), "--log-every", "1", "--no-progress"]


def torchrun(flags):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "train.py", *flags]


def read_metrics(run_dir):
    path = Path(run_dir) / "metrics.csv"
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


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
    cmd = [sys.executable, "-c", "import sys; from benchmarks.gpu_check.training_stages import one_rank_train; "
           "one_rank_train(sys.argv[1:])", *flags, str(store)]
    code = run_command(cmd, log, seconds)
    if report.check("ddp: exit 0", code == 0, code, 0, tail(log)):
        found = re.search(r"one-rank group: backend (\w+)", Path(log).read_text())
        expected = "nccl" if flags[flags.index("--device") + 1] == "cuda" else "gloo"
        report.check("ddp: backend", found and found.group(1) == expected, found and found.group(1), expected)
        check_epochs(report, "ddp", run_dir, log, epochs=1)
