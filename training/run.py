"""A training run: the GLDv2 split and loaders, the model, the optimizer, resuming, and the epoch loop with its
checkpoints, metrics.csv and training curves. train.py and demo.py call ``train``.

Every epoch: train, then the val split's ArcFace loss (with the margin, as trained) and top-1/top-5 error of the
plain cosine logits (no margin: the class a retrieval descriptor is nearest to); a row in metrics.csv, the plot
training_curves.png, last.pth, and best.pth when the val top-1 error is the lowest so far (never with an empty
val split, whose metrics are nan). An epoch in which no training image was readable stops the run (InputError).
HOW's reduction layer is initialised first (``training.reduction_init``), unless the run resumes.
"""

import logging
import math
import time
from functools import partial
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from datasets.gldv2 import LandmarkImages, collate_skip_bad, load_gldv2
from datasets.transforms import train_loader_transform, val_transform
from networks import build_model
from training.checkpointer import Checkpointer, find_resume, load_training_state
from training.engine import derived_seed, memory_format, seed_rng, train_one_epoch, validate
from training.optim import build_optimizer, lr_factor
from training.options import check_args, check_paths, check_resume_args, model_config
from training.reduction_init import initialise_reduction
from utils.distributed import ShardSampler, TrainSampler, main_process_first
from utils.errors import InputError
from utils.training_log import plot_training_curves, write_metrics_row

log = logging.getLogger("train")


def build_data(args, env, micro_batch):
    """The GLDv2 split and its train/val loaders; the train sampler yields whole optimizer steps only."""
    with main_process_first(env):  # rank 0 builds the split cache, the others read it
        split = load_gldv2(args.data_root, args.csv, args.split_seed, args.val_fraction, args.cache_dir)
    train_set = LandmarkImages(split.train, split.root, train_loader_transform(args, env.device))
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


def build_training_model(args, num_classes, env):
    """The --model with an ArcFace head on ``env.device``; channels-last and SyncBatchNorm on GPUs."""
    torch.manual_seed(args.seed)
    with main_process_first(env):  # rank 0 downloads the ImageNet weights, the others read the cache
        model = build_model(model_config(args), num_classes=num_classes, pretrained=args.pretrained,
                            backbone_weights=args.backbone_weights)  # the settings passed check_args
    if getattr(model, "frozen_backbone", False):
        log.info("the %s trunk is frozen (%s weights): only the layers after it train", args.model,
                 "ImageNet" if args.pretrained else "random, --no-pretrained")
    if env.distributed and env.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(env.device, memory_format=memory_format(env.device))


def check_resume_data(resumed, path, split, steps_per_epoch, data_root):
    """The checkpoint must have been trained on data of this split's shape: its class count and steps an epoch."""
    classes = resumed["state_dict"]["arcface.weight"].shape[0] if "arcface.weight" in resumed["state_dict"] else None
    if classes != split.num_classes:
        raise InputError(f"--resume {path}: the checkpoint classifies {classes} landmarks, the data of --data-root "
                         f"{data_root} has {split.num_classes}: resume on the data it was trained on")
    if resumed["steps_per_epoch"] != steps_per_epoch:
        raise InputError(f"--resume {path}: {resumed['steps_per_epoch']} steps an epoch there, {steps_per_epoch} "
                         "now: the train split or the batch size changed")


def restore(resumed, model, optimizer, scaler, lr):
    """Load a checkpoint's weights, optimizer and fp16 scaler state; return its (step, best_top1_err).

    The schedule restarts from ``lr`` (this run's --lr) at the checkpoint's step.
    """
    model.load_state_dict(resumed["state_dict"])
    optimizer.load_state_dict(resumed["optimizer"])
    for group in optimizer.param_groups:
        group["initial_lr"] = lr  # LambdaLR's base
    if scaler.is_enabled() and resumed["scaler"]:  # empty when saved without fp16
        scaler.load_state_dict(resumed["scaler"])
    return resumed["step"], resumed["best_top1_err"]


def train(args, env):
    """The whole run that ``args`` (train.py's flags) describe, on ``env``; raises ``Diverged`` on a NaN."""
    micro_batch = check_args(args, env)
    check_paths(args)
    output_dir = Path(args.output_dir)
    resume_path = find_resume(args.resume, output_dir)
    resumed = load_training_state(resume_path) if resume_path else None
    if resumed:
        check_resume_args(resumed, vars(args), resume_path)

    split, train_loader, val_loader = build_data(args, env, micro_batch)
    steps_per_epoch = len(train_loader) // args.update_every
    total_steps = args.epochs * steps_per_epoch
    if resumed:
        check_resume_data(resumed, resume_path, split, steps_per_epoch, args.data_root)
    if not split.val:
        log.warning("the val split is empty (every landmark has a single image): val_loss, val_top1_err and "
                    "val_top5_err are written as nan and no best.pth is kept; last.pth holds the latest epoch")
    output_dir.mkdir(parents=True, exist_ok=True)

    model = build_training_model(args, split.num_classes, env)
    if args.model == "how" and not resumed:
        initialise_reduction(model, split.train[:args.init_images], split.root, args, env)
    optimizer = build_optimizer(model, args)
    scaler = torch.amp.GradScaler(env.device.type, enabled=args.amp == "fp16")
    step, best_top1_err, totals = 0, math.inf, None
    if resumed:
        step, best_top1_err = restore(resumed, model, optimizer, scaler, args.lr)
        totals = resumed.get("epoch_totals") if step % steps_per_epoch else None  # resumed mid-epoch
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

    checkpointer = Checkpointer(output_dir, model, optimizer, scheduler, scaler, args, env, steps_per_epoch,
                                best_top1_err)
    for epoch in range(step // steps_per_epoch, args.epochs):
        started = time.perf_counter()
        train_loader.sampler.set_epoch(epoch, start=(step - epoch * steps_per_epoch) * micro_batch * args.update_every)
        seed_rng(args.seed, env.rank, step)
        step, stats = train_one_epoch(model, ddp_model, train_loader, optimizer, scheduler, scaler, args, env, epoch,
                                      step, steps_per_epoch, checkpointer, totals)
        totals = None
        if not stats["train_images"]:
            raise InputError(f"epoch {epoch + 1}: no training image was readable ({stats['skipped_images']} "
                             f"skipped), nothing was learnt; stopped without saving: check the images under "
                             f"{split.root}")
        val = validate(model, val_loader, args, env)
        if split.val and val["skipped_images"] == len(split.val):
            log.warning("epoch %d: none of the %d val images was readable: the val metrics are nan", epoch + 1,
                        len(split.val))
        is_best = val["val_top1_err"] < checkpointer.best_top1_err
        if is_best:
            checkpointer.best_top1_err = val["val_top1_err"]
        row = {**stats, **val, "epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "skipped_images": stats["skipped_images"] + val["skipped_images"],
               "time": round(time.perf_counter() - started, 2)}
        if env.is_main:
            write_metrics_row(output_dir / "metrics.csv", row)
            plot_training_curves(output_dir / "metrics.csv", output_dir / "training_curves.png")
        checkpointer.save(step, is_best=is_best)
        parts = "".join(f" ({name.removeprefix('train_loss_')} {value:.4f})" for name, value in stats.items()
                        if name.startswith("train_loss_"))
        log.info("epoch %d/%d: train loss %.4f%s, val loss %.4f, val top-1/top-5 error %.2f/%.2f %%, lr %.3g, "
                 "%.1f images/s, %d skipped images, %.0f s", epoch + 1, args.epochs, row["train_loss"], parts,
                 row["val_loss"], row["val_top1_err"], row["val_top5_err"], row["lr"], row["images_per_s"],
                 row["skipped_images"], row["time"])
