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

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import OUT_DIR, machine, table, write_json
from benchmarks.gpu_check.evaluation_stage import test_stage
from benchmarks.gpu_check.profiles import GPU, SMOKE
from benchmarks.gpu_check.report import KILL_GRACE_S, OutOfTime, Report, check_cosines, run_command
from benchmarks.gpu_check.speed_stages import extract_speed_stage, train_speed_stage
from benchmarks.gpu_check.training_stages import ddp_stage, make_world, resume_stage, train_flags, train_stage
from utils import checks
from utils.errors import fail_cleanly
from utils.paths import writable_file

__all__ = ["KILL_GRACE_S", "OutOfTime", "Report", "check_cosines", "get_args_parser", "main", "run_command"]


def get_args_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default=None, help="JSON report (default runs/benchmarks/gpu_check[-smoke].json)")
    parser.add_argument("--budget-s", type=float, default=300,
                        help="seconds for all stages; a stage that would exceed it is stopped and marked skipped")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda: the GPU check (exits 0 with one line where there is no CUDA); cpu: with --smoke")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (resnet18, 64 px, 2 training steps, gloo on the CPU): every stage end to end")
    parser.add_argument("--workers", type=checks.WORKERS, default=None,
                        help="data-loading processes of train.py and test.py (default: min(8, cores); 0 --smoke)")
    parser.add_argument("--work-dir", default=None,
                        help="keep the world, runs and logs here (default: a temporary folder, deleted at the end)")
    return checks.check_flags(parser)


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


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    checks.non_negative_float("--budget-s", args.budget_s)
    out = writable_file(args.out or OUT_DIR / f"gpu_check{'-smoke' if args.smoke else ''}.json", "--out")
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
    write_json(out, result)
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
