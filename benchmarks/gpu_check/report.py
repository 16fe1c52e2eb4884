"""What the GPU check records (checks, timings, stages within the budget) and how a stage runs its commands."""

import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MIN_COSINE = 0.999
KILL_GRACE_S = 10  # a stopped stage's seconds to end its processes before they are killed


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
