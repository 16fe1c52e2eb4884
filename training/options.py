"""train.py's flags and their checks: ``--model`` picks the model (Token or a Table 1 baseline), whose config
(``networks.config.CONFIGS``) gives the model flags; the rest is the training recipe, the same for every model
(docs/FACTS.md, "Training recipe").

The model flags are those of the chosen model only: ``train.py --help`` lists Token's, ``train.py --model rmac
--help`` R-MAC's (``parse_args`` reads ``--model`` first, then parses with that model's parser).
"""

import argparse
import math
import os
from pathlib import Path

from networks.config import CONFIGS
from training.engine import AMP_DTYPES, MIN_BATCH
from utils import checks
from utils.errors import InputError
from utils.paths import writable_folder
from utils.training_log import read_metrics

# Flags that may change when resuming (e.g. a lower --lr or --clip-grad after a NaN); all others must match.
# --extractor may move: the checkpoint's record of its bytes is checked instead (training.run).
MAY_CHANGE_ON_RESUME = {"epochs", "lr", "clip_grad", "amp", "resume", "output_dir", "data_root", "cache_dir", "workers",
                        "device", "save_every", "log_every", "progress", "pretrained", "backbone_weights",
                        "init_images", "extractor"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append the default to each option's help, but for switches and options unset by default."""

    def _get_help_string(self, action):
        return action.help if action.nargs == 0 or action.default is None else super()._get_help_string(action)


def first_line(text):
    return text.strip().splitlines()[0].rstrip(".")


def model_flag(parser, default="token"):
    return parser.add_argument("--model", default=default, choices=tuple(CONFIGS),
                               help="the model to train: Token or a Table 1 baseline; the model flags below are "
                                    "this model's, `--model NAME --help` lists another's")


def get_args_parser(model="token"):
    """train.py's parser, with the model flags of ``model`` (a name of ``CONFIGS``)."""
    parser = argparse.ArgumentParser(description="Train Token or a Table 1 baseline on GLDv2-clean with ArcFace, in "
                                     "one process or one process per GPU under torchrun.",
                                     formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", default="data",
                      help="data root holding Google-landmark-v2/ (train_clean.csv or train.csv, images at "
                           "train/a/b/c/<id>.jpg), as test.py's; the Google-landmark-v2 folder itself works too")
    data.add_argument("--csv", default="train_clean.csv",
                      help="annotation file in the GLDv2 folder: train_clean.csv (landmark_id,images) or train.csv "
                           "(id,url,landmark_id)")
    data.add_argument("--cache-dir", default=None,
                      help="where the train/val split cache and the label map are kept (default: the GLDv2 folder)")
    data.add_argument("--val-fraction", type=float, default=0.2, help="share of each landmark's images for val")
    data.add_argument("--split-seed", type=checks.SEED, default=0, help="seed of the train/val split")
    data.add_argument("--imsize", type=checks.IMSIZE, default=512,
                      help="training crop and val centre-crop size (pixels); --model aggregator: the longer side "
                           "that the images are thumbnailed to before the extractor takes their local features")
    data.add_argument("--workers", type=checks.WORKERS, default=min(8, os.cpu_count() or 1),
                      help="DataLoader processes per rank (0: load images in the training process)")

    aug = parser.add_argument_group("augmentation (the released code's; each can be switched off)")
    aug.add_argument("--crop-scale", type=float, nargs=2, default=[0.2, 1.0], metavar=("MIN", "MAX"),
                     help="area range of the random resized crop")
    aug.add_argument("--no-random-crop", dest="random_crop", action="store_false",
                     help="resize the short side to --imsize and centre-crop instead of the random resized crop")
    aug.add_argument("--no-hflip", dest="hflip", action="store_false", help="no random horizontal flip")
    aug.add_argument("--color-jitter", type=float, nargs=4, default=[0.4, 0.4, 0.2, 0.1],
                     metavar=("B", "C", "S", "H"), help="colour jitter: brightness, contrast, saturation, hue")
    aug.add_argument("--jitter-p", type=float, default=0.8, help="probability of applying the colour jitter")
    aug.add_argument("--no-color-jitter", dest="jitter", action="store_false", help="no colour jitter")
    aug.add_argument("--pipeline", default="fast", choices=("fast", "released"),
                     help="fast: loader processes size the crop from the JPEG header, decode large crops at a reduced "
                          "scale and send uint8 crops, normalised on the device; the colour jitter runs on the batch "
                          "on a GPU, in the loader on the CPU (docs/benchmarks.md). released: the released "
                          "torchvision transforms, all in the loader processes")

    group = parser.add_argument_group(f"model: {model} ({first_line(CONFIGS[model].__doc__)})")
    model_flag(group, model)
    CONFIGS[model].add_arguments(group)
    if model == "how":
        group.add_argument("--init-images", type=checks.int_in(1, 10**7), default=5000,
                           help="the first N train images whose local features (top 1000 by attention, scale 1, "
                                "thumbnailed to --imsize) initialise the reduction layer by PCA whitening, as HOW "
                                "does; the layer is then frozen (not used on --resume)")
    if model == "aggregator":
        group.add_argument("--extractor", metavar="CKPT", default=None,
                           help="required: the frozen model whose local features the aggregator learns to aggregate "
                                "(a HOW checkpoint, or a DELG one: its local branch); they are extracted once into "
                                "--output-dir/features/ and the checkpoints record the file (path, size, SHA-256), "
                                "which test.py then loads")
        group.add_argument("--keep-min", type=float, default=0.5,
                           help="augmentation: each training image keeps a random subset of its cached local "
                                "features, a fraction drawn uniformly in [KEEP_MIN, 1] (1: all of them)")
    else:
        group.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                           help="random backbone instead of ImageNet weights")
        group.add_argument("--backbone-weights", metavar="PATH", default=None,
                           help="ImageNet weights file of the backbone (default: torchvision's, from the hub cache)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=30,
                       help="epochs; may be raised on --resume, the schedule then stretches to the new total")
    optim.add_argument("--batch-size", type=int, default=128,
                       help="GLOBAL batch of one optimizer step, split over processes and --update-every")
    optim.add_argument("--update-every", type=int, default=1,
                       help="gradient accumulation: micro-batches summed into one optimizer step")
    optim.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"),
                       help="SGD with momentum (the paper's), or AdamW (much faster from scratch: the CPU demo's)")
    optim.add_argument("--lr", type=float, default=0.01, help="peak learning rate (not scaled by the batch size)")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optim.add_argument("--no-nesterov", dest="nesterov", action="store_false", help="plain momentum, not Nesterov")
    optim.add_argument("--weight-decay", type=float, default=1e-4,
                       help="weight decay, not applied to biases and normalisation weights (1-d parameters)")
    optim.add_argument("--schedule", default="linear", choices=("linear", "cosine"),
                       help="per step: linear decay to 0 (the paper's), or warm-up then cosine to 0 (released code)")
    optim.add_argument("--warmup-epochs", type=float, default=5, help="cosine schedule: epochs of linear warm-up")
    optim.add_argument("--warmup-lr", type=float, default=1e-4, help="cosine schedule: learning rate at step 0")
    optim.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                       help="clip the gradient's global L2 norm to NORM (default: no clipping)")
    optim.add_argument("--amp", default="none", choices=tuple(AMP_DTYPES),
                       help="mixed precision: bf16, or fp16 with a gradient scaler")
    optim.add_argument("--seed", type=checks.SEED, default=0,
                       help="seed of the initialisation, data order and augmentation")

    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="auto: CUDA when available (one GPU per torchrun process), else CPU")
    run.add_argument("--output-dir", default="runs/token",
                     help="where last.pth, best.pth, metrics.csv and training_curves.png go")
    run.add_argument("--resume", metavar="PATH|auto", default=None,
                     help="continue from a checkpoint; auto: --output-dir/last.pth if it exists, else start fresh")
    run.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                     help="also save last.pth every STEPS optimizer steps within an epoch (0: at epoch ends only)")
    run.add_argument("--log-every", type=int, default=20, metavar="STEPS",
                     help="steps between progress-bar updates of loss and images/s (and checks for a NaN loss)")
    run.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bars (for log files); the log line of every epoch stays")
    return checks.check_flags(parser)


def parse_args(argv=None):
    """train.py's flags: ``--model`` first (default token), then everything with that model's parser."""
    known = argparse.ArgumentParser(add_help=False)
    model_flag(known)
    chosen, _ = known.parse_known_args(argv)
    return get_args_parser(chosen.model).parse_args(argv)


def model_config(args):
    """The config of the model that train.py's parsed flags describe; ``ValueError`` for settings it refuses."""
    return CONFIGS[args.model].from_args(args)


def check_args(args, env):
    """Raise an InputError naming the flag for settings that cannot run, before any work; return the micro-batch
    each rank loads."""
    for flag in ("epochs", "batch_size", "update_every", "log_every"):
        checks.positive_int(f"--{flag.replace('_', '-')}", getattr(args, flag))
    for flag in ("workers", "save_every"):
        checks.non_negative_int(f"--{flag.replace('_', '-')}", getattr(args, flag))
    checks.positive_float("--lr", args.lr)
    for flag in ("momentum", "weight_decay", "warmup_epochs", "warmup_lr"):
        checks.non_negative_float(f"--{flag.replace('_', '-')}", getattr(args, flag))
    if args.clip_grad is not None:
        checks.positive_float("--clip-grad", args.clip_grad)
    checks.ordered_pair("--crop-scale", args.crop_scale, 0, 1)
    jitter = args.color_jitter
    if not (all(math.isfinite(v) and v >= 0 for v in jitter) and jitter[3] <= 0.5):
        raise InputError(f"--color-jitter {' '.join(map(str, jitter))}: expected B C S H, finite and at least 0, "
                         "the hue H at most 0.5")
    checks.unit_interval("--jitter-p", args.jitter_p)
    if not 0 < args.val_fraction < 1:
        raise InputError(f"--val-fraction {args.val_fraction}: expected a number strictly between 0 and 1")
    share = env.world_size * args.update_every
    if args.batch_size % share or args.batch_size < MIN_BATCH * share:
        raise InputError(f"--batch-size {args.batch_size} must be a multiple of {share} (processes x --update-every) "
                         f"and at least {MIN_BATCH * share}, so that each micro-batch has {MIN_BATCH}+ images")
    if args.model == "aggregator":
        check_aggregator_args(args)
    if args.nesterov and args.momentum <= 0:
        raise InputError("Nesterov momentum needs --momentum > 0 (or pass --no-nesterov)")
    try:
        model_config(args)
    except ValueError as err:
        raise InputError(f"model settings: {err}") from None
    return args.batch_size // share


def check_aggregator_args(args):
    if args.extractor is None:
        raise InputError("--model aggregator needs --extractor CKPT: the model whose local features it aggregates")
    if not 0 < args.keep_min <= 1:
        raise InputError(f"--keep-min {args.keep_min}: expected a fraction in (0, 1]")


def check_paths(args):
    """Raise an InputError naming the flag when --output-dir (or --cache-dir) cannot be written, or when the
    metrics.csv there (a run resumed, or continued) has a row that the first epoch could not rewrite, before any
    work."""
    writable_folder(args.output_dir, "--output-dir")
    if args.cache_dir is not None:
        writable_folder(args.cache_dir, "--cache-dir")
    metrics = Path(args.output_dir) / "metrics.csv"
    if metrics.is_file():
        read_metrics(metrics)


def check_resume_args(resumed, current, path):
    """The run's settings must be the checkpoint's (its ``args`` and ``model_config``), but for
    MAY_CHANGE_ON_RESUME. A checkpoint of another model is refused first, naming both. A setting the checkpoint does
    not record (a flag added after it was written, such as --optimizer; ``model``, before the baselines) counts as
    that flag's default."""
    model = resumed["model_config"].get("model", "token")
    if model != current["model"]:
        raise InputError(f"--resume {path}: the checkpoint holds a {model!r} model, this run trains "
                         f"--model {current['model']}; pass --model {model} to continue it")
    saved = {**vars(get_args_parser(model).parse_args([])), **resumed["args"], **resumed["model_config"]}
    changed = [key for key in current if key not in MAY_CHANGE_ON_RESUME and saved.get(key) != current[key]]
    if changed:
        raise InputError(f"--resume {path}: the checkpoint was trained with other settings: "
                         + ", ".join(f"{key} {saved.get(key)!r} (now {current[key]!r})" for key in changed))
