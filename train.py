"""Train Token (or a Table 1 baseline, --model) on GLDv2-clean with ArcFace, in one process or one process per GPU
under torchrun.

    python train.py --data-root data --output-dir runs/token     # data/Google-landmark-v2/train_clean.csv ...
    torchrun --nproc_per_node 4 train.py --data-root data --output-dir runs/token
    sh experiment.sh   # the paper's recipe: 4 GPUs, global batch 128, 512 px crops, 30 epochs, ResNet-101
    python train.py --model delg --help   # a baseline: rmac, solar, delg, netvlad, apgem, and its model flags

Every epoch: train, then the val split's loss and top-1/top-5 error; a row in metrics.csv, the plot
training_curves.png, last.pth, and best.pth when the val top-1 error is the lowest so far (training/run.py).
Exit codes: 0 done, 2 bad input (one line, no traceback), 3 the loss or the weights became NaN.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import logging
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from training.checkpointer import LAST
from training.engine import Diverged
from training.options import parse_args
from training.run import train
from utils.distributed import cleanup, init_distributed
from utils.errors import EXIT_DIVERGED, fail_cleanly


@fail_cleanly
def main(argv=None):
    args = parse_args(argv)
    env = init_distributed(args.device)
    rank = f"[rank {env.rank}] " if env.distributed else ""
    logging.basicConfig(level=logging.INFO if env.is_main else logging.WARNING,
                        format=f"%(asctime)s {rank}%(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        with logging_redirect_tqdm():
            train(args, env)
    except Diverged as err:
        last = Path(args.output_dir) / LAST
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved"
        if env.is_main:
            print(f"error: {err}; stopped without saving, {kept} (--resume it with a lower --lr or with "
                  "--clip-grad)", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
