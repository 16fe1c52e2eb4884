"""Evaluate Token on revisited Oxford and Paris, optionally with the 1M distractors: multi-scale descriptors, exact
or product-quantised search, alpha-QE and DBA; mAP and mP@1,5,10 under the Easy, Medium and Hard protocols.

    python test.py --checkpoint R101-Token.pth --data-root data
    python test.py --checkpoint R101-Token.pth --data-root data --r1m --output-dir runs/eval --pq 64 --qe --dba
    torchrun --nproc_per_node 4 test.py --checkpoint R101-Token.pth --data-root data --r1m --output-dir runs/eval

The protocol is docs/FACTS.md, "Evaluation protocol". The work is done by ``retrieval.evaluation``, which other
code calls directly (``evaluate_checkpoint``); this script is its command line.
"""

from retrieval import evaluation
from utils.distributed import cleanup, init_distributed
from utils.errors import fail_cleanly


@fail_cleanly
def main(argv=None):
    settings = evaluation.parse_settings(argv)
    env = init_distributed(settings.device)
    try:
        evaluation.check_settings(settings, env)
        with evaluation.output_folder(settings.output_dir) as output_dir:
            test_sets, distractors = evaluation.load_test_sets(settings)
            model = evaluation.load_model(settings, env)
            return evaluation.evaluate_model(settings, env, model, test_sets, distractors, output_dir)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
