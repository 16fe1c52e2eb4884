"""Processes killed mid-run (``tests/faults.py`` indexes every fault): a SIGKILLed train.py resumes from its last
complete checkpoint, one dead DDP rank stops the others."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.faults import SUBPROCESS_ENV, wait_for
from tests.test_train import TINY
from training.checkpointer import load_training_state

# ---------------------------------------------------------------- SIGKILL during training


def test_sigkilled_training_resumes_auto_from_the_last_complete_checkpoint(gldv2, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "train.py", *TINY, "--data-root", str(gldv2), "--output-dir", str(out),
               "--epochs", "2", "--save-every", "1", "--resume", "auto"]
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=SUBPROCESS_ENV)
        try:
            wait_for(lambda: (out / "last.pth").exists() or first.poll() is not None, 120, "the first checkpoint")
            first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    killed_at = load_training_state(out / "last.pth")["step"]  # complete, whenever the kill landed
    # A kill during the next save would have left its temporary file: the resume must not take it for a checkpoint.
    (out / ".last.pth.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {out / 'last.pth'} at step {killed_at}" in done.stderr
    assert load_training_state(out / "last.pth")["step"] == 12  # 2 epochs of 6 steps


# ---------------------------------------------------------------- one DDP rank dies


def _children(pid):
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def _rank(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return int(env.get(b"RANK", -1))


def test_one_dead_rank_stops_the_others_within_a_minute(gldv2, tmp_path):
    """torchrun's elastic agent watches its workers: when one exits non-zero (here SIGKILL) it stops the others
    and exits non-zero itself (no --max-restarts). Without torchrun (not tested here) nothing watches the ranks: gloo
    collectives normally fail when the peer's connection closes, NCCL ones wait for the process group's timeout
    (PyTorch's default: 10 minutes for NCCL, 30 for gloo), which is left as is because rank 0 may legitimately
    keep the others at a barrier for minutes (building the GLDv2 split cache)."""
    log_path = tmp_path / "ddp.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
               *TINY, "--data-root", str(gldv2), "--output-dir", str(tmp_path / "run"), "--epochs", "100"]
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=SUBPROCESS_ENV)
        try:
            wait_for(lambda: "steps an epoch" in log_path.read_text() or agent.poll() is not None, 180,
                      "training to start")
            assert agent.poll() is None, log_path.read_text()[-3000:]
            workers = {_rank(pid): pid for pid in _children(agent.pid)}
            assert sorted(workers) == [0, 1], workers
            os.kill(workers[1], signal.SIGKILL)
            killed = time.monotonic()
            code = agent.wait(timeout=60)
            assert time.monotonic() - killed < 60
        finally:
            agent.kill()
            agent.wait()
    assert code != 0
    assert _state(workers[0]) in ("gone", "Z")  # rank 0 is gone too


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
