"""train.py's checkpoints: ``last.pth`` (every epoch end and every --save-every steps) and ``best.pth`` (the epoch of
the lowest val top-1 error so far) in the output folder, and resuming from them.

Each holds ``weights.model_state`` (what ``load_model`` reads) plus what resuming needs (``TRAINING_KEYS``), and is
written whole or not at all (``weights.save_checkpoint``): a run killed at any moment resumes from the last complete
``last.pth`` (``--resume auto``).
"""

import logging
import math
from pathlib import Path

from training.engine import require_finite
from utils.errors import InputError
from weights import copy_checkpoint, model_state, read_file, save_checkpoint

log = logging.getLogger("train")

LAST = "last.pth"
BEST = "best.pth"
TRAINING_KEYS = ("step", "steps_per_epoch", "state_dict", "model_config", "optimizer", "scheduler", "scaler", "args",
                 "best_top1_err", "epoch")


def training_state(model, optimizer, scheduler, scaler, args, step, steps_per_epoch, best_top1_err,
                   epoch_totals=None):
    """train.py's ``last.pth`` / ``best.pth``: ``model_state`` plus what resuming needs (``TRAINING_KEYS``).

    ``epoch_totals`` (saved mid-epoch: the epoch's loss sum, image counts and seconds so far) lets the resumed
    epoch's metrics cover the whole epoch; files without it (older, or saved at an epoch end) start from zero."""
    return {**model_state(model), "epoch": step // steps_per_epoch, "step": step, "steps_per_epoch": steps_per_epoch,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "args": vars(args), "best_top1_err": best_top1_err, "epoch_totals": epoch_totals or {}}


def load_training_state(path):
    """A train.py checkpoint to resume from, as a dict on the CPU."""
    obj = read_file(path, "a train.py checkpoint such as last.pth")
    missing = [key for key in TRAINING_KEYS if not isinstance(obj, dict) or key not in obj]
    if missing:
        raise InputError(f"{path}: not a train.py checkpoint to resume from, no {', '.join(missing)}")
    return obj


def find_resume(resume, output_dir):
    """The checkpoint ``--resume`` names: None (start fresh), a path, or ``auto`` = ``output_dir/last.pth``
    when it exists (else None, said in the log)."""
    if resume is None:
        return None
    if resume == "auto":
        last = Path(output_dir) / LAST
        if last.is_file():
            return last
        log.info("--resume auto: no %s yet, starting a fresh run", last)
        return None
    if not Path(resume).is_file():
        raise InputError(f"--resume {resume}: not found; expected a train.py checkpoint such as {LAST}")
    return Path(resume)


class Checkpointer:
    """Saves a run's state to ``output_dir``: what ``train`` and ``train_one_epoch`` call to checkpoint.

    ``best_top1_err``: the lowest val top-1 error so far (``math.inf`` before the first epoch), saved with the
    state; the caller lowers it when an epoch beats it and saves with ``is_best``.
    """

    def __init__(self, output_dir, model, optimizer, scheduler, scaler, args, env, steps_per_epoch,
                 best_top1_err=math.inf):
        self.output_dir = Path(output_dir)
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.args, self.env, self.steps_per_epoch = args, env, steps_per_epoch
        self.best_top1_err = best_top1_err

    def save(self, step, totals=None, is_best=False):
        """Write ``last.pth`` at optimizer ``step`` (``totals``: the epoch's sums so far, mid-epoch) on the main
        process, and make ``best.pth`` the same file when ``is_best``. Raises ``Diverged`` on every rank, before
        writing anything, when the weights are not finite."""
        require_finite(self.model, step)
        if not self.env.is_main:
            return
        state = training_state(self.model, self.optimizer, self.scheduler, self.scaler, self.args, step,
                               self.steps_per_epoch, self.best_top1_err, totals)
        save_checkpoint(state, self.output_dir / LAST)
        if is_best:
            copy_checkpoint(self.output_dir / LAST, self.output_dir / BEST)
