"""benchmarks/gpu_check/: one line and exit 0 without CUDA; the CPU smoke run goes through every stage (torchrun
training, resume, the one-rank DDP group, test.py and its descriptor check, the timings, the JSON); the cosine
check, the budget and the stopping of a stage that runs out of time."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["world", "train-none", "resume-none", "ddp", "test-amp", "train-speed", "extract-speed"]


def run_module(*args, env=None):
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=900)


def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    done = run_module(env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device here")


def test_the_cpu_smoke_run_goes_through_every_stage(tmp_path):
    out = tmp_path / "report.json"
    done = run_module("--device", "cpu", "--smoke", "--budget-s", "800", "--out", str(out),
                      "--work-dir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert [s["name"] for s in report["stages"]] == STAGES
    assert all(s["status"] == "done" for s in report["stages"]), report["stages"]
    assert report["passed"] is True and report["skipped"] == []
    checks = {c["name"]: c for c in report["checks"]}
    assert all(c["status"] == "pass" for c in checks.values())
    assert checks["resume --amp none: resumed at the saved step"]["value"] == 2  # 8 train images, batch 4
    assert checks["resume --amp none: continued to step"]["value"] == 4
    assert checks["ddp: exit 0"]["value"] == 0 and "ddp: finite loss" in checks
    for part in ("query", "db"):
        assert checks[f"test.py vs float32: {part} descriptors"]["value"] > 0.99999  # float32 on both sides
    timings = {t["name"]: t["value"] for t in report["timings"]}
    for name in ("training step --amp none", "extraction float32, batch 1", "extraction float32, batch 2",
                 "resume --amp none: train.py images/s"):
        assert timings[name] > 0
    assert "checks passed" in done.stdout and "| check | status |" in done.stdout
    resumed = (tmp_path / "work" / "train-none-resume.log").read_text()
    assert "resuming" in resumed and "at step 2" in resumed


def test_the_cosine_check_fails_on_a_turned_or_non_finite_descriptor():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 16)).astype(np.float32)
    report = gpu_check.Report(60)
    assert gpu_check.check_cosines(report, "same", a, a * 2)
    turned = a.copy()
    turned[3] = rng.standard_normal(16)
    assert not gpu_check.check_cosines(report, "turned", turned, a)
    broken = a.copy()
    broken[1, 0] = np.nan
    assert not gpu_check.check_cosines(report, "nan", broken, a)
    assert not gpu_check.check_cosines(report, "shape", a[:4], a)
    statuses = {c["name"]: (c["status"], c["detail"]) for c in report.checks}
    assert statuses["same"][0] == "pass" and statuses["turned"] == ("fail", "1 of 5 rows below or not finite")
    assert statuses["nan"] == ("fail", "1 of 5 rows below or not finite") and statuses["shape"][0] == "fail"


def test_with_no_budget_left_every_stage_is_skipped_and_nothing_fails(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert gpu_check.main(["--device", "cpu", "--smoke", "--budget-s", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["skipped"] == STAGES and report["checks"] == []
    assert report["stages"][0]["detail"] == "skipped: out of time (not started)"
    assert "skipped: world, train-none" in capsys.readouterr().out


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_stage_out_of_time_is_stopped_with_its_child_processes(tmp_path):
    pids = tmp_path / "pids"
    child = (f"import os, subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
             f"time.sleep(60)']); open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{p.pid}}'); time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(gpu_check.OutOfTime, match="stopped after 6 s"):
        gpu_check.run_command([sys.executable, "-c", child], tmp_path / "log", 6)
    assert time.monotonic() - start < 6 + gpu_check.KILL_GRACE_S
    time.sleep(0.5)
    assert not any(_alive(int(pid)) for pid in pids.read_text().split())
