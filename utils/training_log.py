"""The training log: step statistics kept on the device, ``metrics.csv`` and ``training_curves.png``.

``metrics.csv`` has one row per epoch (columns ``COLUMNS``): ``epoch`` counts from 1, ``step`` is the optimizer
steps done, errors are in percent, ``lr`` is the learning rate after the epoch's last step, ``skipped_images``
counts unreadable train and val images, ``time`` is the epoch's wall time in seconds. A model whose loss has parts
(DELG: global and local head) adds a column ``train_loss_<part>`` per part after them.
"""

import csv
import io
import math
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch.distributed import ReduceOp

from utils.atomic import atomic_write
from utils.distributed import all_reduce
from utils.errors import InputError

COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_top1_err", "val_top5_err", "lr", "images_per_s",
           "skipped_images", "time")
NO_STEP = 2**62  # "no non-finite loss seen": larger than any step


class StepMeter:
    """Training loss (and its parts, if the model has any), image counts and the first step with a non-finite
    loss, summed on the device.

    ``update`` launches a few tiny device ops and never waits for the GPU; ``sync`` (every few steps) reduces
    the window over all ranks in one transfer and folds it into the epoch totals.
    """

    def __init__(self, device, totals=None, parts=()):
        """``totals`` (from ``totals()`` of a checkpoint saved mid-epoch) continues that epoch's sums; ``parts``: the
        names of the loss parts that every ``update`` gives (the same on every rank)."""
        totals = totals or {}
        self.device, self.parts = device, tuple(parts)
        self.total_loss = float(totals.get("loss_sum", 0.0))
        self.total_images = float(totals.get("images", 0.0))
        self.total_skipped = float(totals.get("skipped", 0.0))
        self.total_parts = {name: float(totals.get("parts", {}).get(name, 0.0)) for name in self.parts}
        self.epoch_start = time.perf_counter() - float(totals.get("seconds", 0.0))
        self.first_bad_step = torch.full((), NO_STEP, dtype=torch.int64, device=device)
        self._reset_window()

    def _reset_window(self):
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.part_sums = {name: torch.zeros((), dtype=torch.float64, device=self.device) for name in self.parts}
        self.images = self.skipped = 0
        self.window_start = time.perf_counter()

    def update(self, loss, n, step, parts=None):
        """Add the mean ``loss`` of ``n`` images computed for optimizer step ``step``, and its ``parts`` (a dict
        name -> mean loss of that part, over the names given to the constructor)."""
        loss = loss.detach()
        self.loss_sum += loss.double() * n
        for name in self.parts:
            self.part_sums[name] += parts[name].detach().double() * n
        self.first_bad_step = torch.where(torch.isfinite(loss), self.first_bad_step,
                                          self.first_bad_step.clamp(max=step))
        self.images += n

    def count_skipped(self, n):
        """Add ``n`` unreadable images."""
        self.skipped += n

    def sync(self):
        """Reduce the window over ranks: {"loss", "parts" (name -> loss), "images_per_s", "first_bad_step" (None
        if all finite)}."""
        counts = torch.tensor([self.images, self.skipped], dtype=torch.float64, device=self.device)
        sums = torch.stack([self.loss_sum, *self.part_sums.values()])
        loss_sum, *part_sums, images, skipped = all_reduce(torch.cat([sums, counts])).tolist()
        first_bad = int(all_reduce(self.first_bad_step.clone(), op=ReduceOp.MIN))
        seconds = time.perf_counter() - self.window_start
        self.total_loss += loss_sum
        self.total_images += images
        self.total_skipped += skipped
        parts = dict(zip(self.parts, part_sums, strict=True))
        for name, part_sum in parts.items():
            self.total_parts[name] += part_sum
        self._reset_window()
        mean = lambda total: total / images if images else math.nan  # noqa: E731
        return {"loss": mean(loss_sum), "parts": {name: mean(part) for name, part in parts.items()},
                "images_per_s": images / max(seconds, 1e-9),
                "first_bad_step": None if first_bad == NO_STEP else first_bad}

    def totals(self):
        """The epoch's sums so far, all ranks, as plain numbers (call right after ``sync``): what a checkpoint
        saved mid-epoch keeps, so that the resumed epoch's statistics cover all its steps."""
        return {"loss_sum": self.total_loss, "images": self.total_images, "skipped": self.total_skipped,
                "parts": dict(self.total_parts), "seconds": time.perf_counter() - self.epoch_start}

    def epoch_summary(self):
        """Totals of the epoch: mean loss (and ``train_loss_<part>`` per part), images trained, images per second
        and unreadable images, all ranks."""
        seconds = time.perf_counter() - self.epoch_start
        mean = lambda total: total / self.total_images if self.total_images else math.nan  # noqa: E731
        return {"train_loss": mean(self.total_loss),
                **{f"train_loss_{name}": mean(total) for name, total in self.total_parts.items()},
                "train_images": int(self.total_images), "images_per_s": self.total_images / max(seconds, 1e-9),
                "skipped_images": int(self.total_skipped)}


def write_metrics_row(path, row):
    """Add ``row`` (a dict over ``COLUMNS`` and any ``train_loss_<part>``) to the CSV at ``path``, replacing the
    file atomically.

    Rows of the same or later epochs are dropped first: they come from a run that was stopped and resumed
    from an earlier checkpoint, and the resumed run now redoes those epochs.
    """
    path = Path(path)
    rows = read_metrics(path) if path.is_file() else []
    rows = [old for old in rows if int(old["epoch"]) < int(row["epoch"])] + [row]
    text = io.StringIO(newline="")
    columns = [*COLUMNS, *sorted(key for key in row if key.startswith("train_loss_"))]
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows({key: r[key] for key in columns} for r in rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def read_metrics(path):
    """The rows of a metrics.csv as dicts of strings, checked: train.py's columns, ``epoch`` a whole number from 1,
    every other value a number (nan included). A run resumed into its folder reads it before any training
    (``training.options.check_paths``): a row it could not rewrite is found then, not after an epoch."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read it as a metrics.csv ({err.__class__.__name__}: {err})") from None
    missing = [name for name in COLUMNS if rows and name not in reader.fieldnames]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)}; expected a metrics.csv of train.py "
                         f"({','.join(COLUMNS)})")
    for line, row in enumerate(rows, start=2):
        if not (row["epoch"] or "").isdecimal() or int(row["epoch"]) < 1:
            raise InputError(f"{path}, line {line}: epoch {row['epoch']!r} is not a whole number of at least 1")
        bad = next((name for name in reader.fieldnames if name and not _is_number(row[name])), None)
        if bad is not None:
            raise InputError(f"{path}, line {line}: {bad} {row[bad]!r} is not a number")
    return rows


def _is_number(text):
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def plot_training_curves(metrics_csv, out_png):
    """Plot a metrics.csv in three panels (loss, val top-1/top-5 error, learning rate) against the epoch, as the
    PNG ``out_png``; the path written."""
    rows = read_metrics(metrics_csv)
    if not rows:
        raise InputError(f"{metrics_csv}: no rows to plot")

    def column(name):
        return [float(r[name]) for r in rows]

    epochs = column("epoch")
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    loss, err, lr = fig.subplots(1, 3)
    loss.plot(epochs, column("train_loss"), "o-", label="train")
    loss.plot(epochs, column("val_loss"), "s-", label="val")
    for name in (key for key in rows[0] if key.startswith("train_loss_")):
        loss.plot(epochs, column(name), ".--", label=f"train, {name.removeprefix('train_loss_')} part")
    loss.set(title="ArcFace loss", xlabel="epoch", ylabel="loss")
    err.plot(epochs, column("val_top1_err"), "o-", label="top-1")
    err.plot(epochs, column("val_top5_err"), "s-", label="top-5")
    err.set(title="val error (cosine logits)", xlabel="epoch", ylabel="error (%)")
    lr.plot(epochs, column("lr"), "o-")
    lr.set(title="learning rate", xlabel="epoch", ylabel="lr")
    for ax in (loss, err):
        ax.legend()
    for ax in (loss, err, lr):
        ax.grid(alpha=0.3)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=100))
    return out_png
