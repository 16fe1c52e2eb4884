"""One epoch of ArcFace training and the val metrics, the same code in one process or under DDP."""

import logging
import math
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributed import ReduceOp
from tqdm import tqdm

from datasets.transforms import device_jitter, on_device
from utils.distributed import all_reduce, broadcast_buffers
from utils.training_log import StepMeter

log = logging.getLogger("train")

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_BATCH = 2  # BatchNorm needs two images a batch in training mode


class Diverged(RuntimeError):
    """The loss or the weights became NaN or infinite."""


def memory_format(device):
    return torch.channels_last if device.type == "cuda" else torch.preserve_format


def to_device(images, env, augment=None):
    """A batch on ``env.device`` in its memory format, made float, augmented by ``augment`` and normalised there
    when it comes uint8 (``datasets.transforms.on_device``); sets of local features (B, n, c) as they are."""
    images = on_device(images.to(env.device, non_blocking=True), augment)
    return images.to(memory_format=memory_format(env.device)) if images.ndim == 4 else images


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


def forward_backward(model, ddp_model, images, labels, scaler, meter, args, env, step, augment=None):
    """One micro-batch of optimizer step ``step``: forward, backward of its loss / --update-every. Returns whether
    the micro-batch was usable (``mean_over_usable`` then makes the step's gradient their mean).

    A batch left with fewer than two readable images is skipped: it changes no weight, gradient or buffer; under
    DDP this rank still joins the gradient all-reduce (``blank_backward``). A model whose loss has parts (DELG's
    global and local heads) names them in ``model.loss_part_names`` and keeps their values of the last forward in
    ``model.loss_parts``; the meter logs them beside the loss.
    """
    if len(labels) < MIN_BATCH:
        log.warning("step %d: skipping a batch with %d readable image(s)", step, len(labels))
        if env.distributed:
            blank_backward(model, ddp_model, scaler, args, env)
        return False
    images = to_device(images, env, augment)
    labels = labels.to(env.device, non_blocking=True)
    with torch.autocast(env.device.type, dtype=AMP_DTYPES[args.amp], enabled=args.amp != "none"):
        loss, _ = ddp_model(images, labels)
    meter.update(loss, len(labels), step, getattr(model, "loss_parts", None))
    scaler.scale(loss / args.update_every).backward()
    return True


@contextmanager
def buffers_kept(model):
    """Put every buffer of ``model`` (BatchNorm statistics, the VQ tokenizer's EMA centres) back on exit."""
    saved = [buffer.clone() for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved, strict=True):
                buffer.copy_(value)


def blank_backward(model, ddp_model, scaler, args, env):
    """This rank's part in the DDP gradient all-reduce of a micro-batch it skips: DDP's reducer only counts a
    backward that follows a forward of the wrapper, on every rank. The forward takes blank images (zero local
    features for the aggregator) with the buffers put back after it; the backward is of zero times the loss and every
    trained parameter, so every gradient hook fires with zeros. Under SyncBatchNorm (GPUs) the blank images still
    enter that forward's batch statistics of the other ranks."""
    config = model.config
    shape = (config.num_features, config.local_dim) if config.model == "aggregator" else (3, args.imsize, args.imsize)
    images = torch.zeros(MIN_BATCH, *shape, device=env.device)
    labels = torch.zeros(MIN_BATCH, dtype=torch.int64, device=env.device)
    with buffers_kept(model):  # after the backward too: BatchNorm's saves its running statistics for it
        with torch.autocast(env.device.type, dtype=AMP_DTYPES[args.amp], enabled=args.amp != "none"):
            loss, _ = ddp_model(to_device(images, env), labels)
        every_parameter = sum(p.sum() for p in model.parameters() if p.requires_grad)
        scaler.scale(0.0 * (loss.float() + every_parameter)).backward()


def mean_over_usable(model, usable, env, update_every):
    """Make the step's summed gradients (each micro-batch's / --update-every, averaged over ranks by DDP) their mean
    over the micro-batches of every rank that were usable, ``usable`` of them on this rank: a skipped micro-batch
    does not shrink the others'. Returns False when none was usable anywhere (no optimizer step)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not env.distributed:
        if 0 < usable < update_every:
            torch._foreach_mul_(grads, update_every / usable)
        return usable > 0
    total = all_reduce(torch.tensor(float(usable), device=env.device))
    if not usable and not total.item():  # only a rank with nothing usable waits for the count
        return False
    torch._foreach_mul_(grads, update_every * env.world_size / total)
    return True


def optimizer_step(model, optimizer, scaler, clip_grad):
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()


def train_one_epoch(model, ddp_model, loader, optimizer, scheduler, scaler, args, env, epoch, step,
                    steps_per_epoch, checkpointer, totals=None):
    """Train from global optimizer ``step`` to the end of ``epoch``; return the step reached and epoch statistics.

    Statistics stay on the device between syncs (every --log-every steps), where a non-finite loss stops the run.
    ``totals``: the sums of the steps of this epoch before ``step`` (a mid-epoch resume). Every --save-every steps
    short of the epoch's end, ``checkpointer.save(step, totals)`` (``training.checkpointer.Checkpointer``) writes
    last.pth with the sums so far.
    """
    ddp_model.train()
    meter = StepMeter(env.device, totals, getattr(model, "loss_part_names", ()))
    end = (epoch + 1) * steps_per_epoch
    bar = tqdm(total=steps_per_epoch, initial=step - epoch * steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}",
               disable=not (env.is_main and args.progress), dynamic_ncols=True, mininterval=1.0)
    usable = 0  # the micro-batches of the current optimizer step that were usable on this rank
    augment = device_jitter(args, env.device)
    for i, (images, labels, skipped) in enumerate(loader):
        meter.count_skipped(skipped)
        last_micro = (i + 1) % args.update_every == 0
        with ddp_model.no_sync() if env.distributed and not last_micro else nullcontext():
            usable += forward_backward(model, ddp_model, images, labels, scaler, meter, args, env, step + 1,
                                       augment)
        if not last_micro:
            continue
        if mean_over_usable(model, usable, env, args.update_every):
            optimizer_step(model, optimizer, scaler, args.clip_grad)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step, usable = step + 1, 0
        bar.update()
        mid_epoch_save = args.save_every and step % args.save_every == 0 and step < end
        if step % args.log_every == 0 or mid_epoch_save:
            sync_and_check(meter, bar, optimizer)
        if mid_epoch_save:
            checkpointer.save(step, meter.totals())
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
        parts = {name: f"{loss:.4f}" for name, loss in window["parts"].items()}
        bar.set_postfix(loss=f"{window['loss']:.4f}", **parts, lr=f"{optimizer.param_groups[0]['lr']:.3g}",
                        img_s=f"{window['images_per_s']:.1f}")


@torch.no_grad()
def validate(model, loader, args, env):
    """Val ArcFace loss (with the margin) and top-1/top-5 error in % of the cosine logits, over all ranks.

    Each rank evaluates its own shard (no padding duplicates) with rank 0's buffers; sums and counts are
    all-reduced once at the end.
    """
    model.eval()
    broadcast_buffers(model)
    k = min(5, model.arcface.weight.shape[0])
    sums = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss, top-1 hits, top-k hits
    images_seen = images_skipped = 0
    for images, labels, skipped in tqdm(loader, desc="val", leave=False, disable=not (env.is_main and args.progress),
                                        dynamic_ncols=True, mininterval=1.0):
        images_skipped += skipped
        images_seen += len(labels)
        if not len(labels):
            continue
        images = to_device(images, env)
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
