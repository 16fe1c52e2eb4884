"""Evaluate a model (Token or a Table 1 baseline) on revisited Oxford and Paris, optionally with the 1M
distractors: multi-scale descriptors, exact or product-quantised search, alpha-QE and DBA; mAP and mP@1,5,10
under the Easy, Medium and Hard protocols.

    python test.py --checkpoint R101-Token.pth --data-root data
    python test.py --checkpoint R101-SOLAR --data-root data          # a released name, from models/
    python test.py --checkpoint Resnet-101-AP-GeM.pt --data-root data --protocol dir --whiten Landmarks_clean
    python test.py --checkpoint R101-Token.pth --data-root data --r1m --output-dir runs/eval --pq 64 --qe --dba
    torchrun --nproc_per_node 4 test.py --checkpoint R101-Token.pth --data-root data --r1m --output-dir runs/eval

The protocol is docs/FACTS.md, "Evaluation protocol". The work is done by ``retrieval.evaluation``, which other
code calls directly (``evaluate_checkpoint``); this script is its command line.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
from retrieval import evaluation
from utils.distributed import cleanup, init_distributed
from utils.errors import fail_cleanly


@fail_cleanly
def main(argv=None):
    settings = evaluation.parse_settings(argv)
    env = init_distributed(settings.device)
    try:
        return evaluation.evaluate_checkpoint(settings, env)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
