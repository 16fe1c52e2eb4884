"""The paper's ablations (Tables 3-6, experiments/tables.py) on the synthetic world, on the CPU, with the demo's
recipe (training.recipes.DEMO: a ResNet-18 Token from scratch, 64 px crops, four epochs of AdamW).

    python -m experiments.ablations                          # Tables 3-6, seeds 0 1 2
    python -m experiments.ablations --tables 5 --seeds 0     # one table, one seed
    python -m experiments.ablations --tables gap             # ours: Token and GeM trained longer, larger crops
    python -m experiments.ablations --tables temperature     # ours: Token with its tokenizer's logits / sqrt(d)
    python -m experiments.ablations --world cluttered        # the same rows on the cluttered world

Each row and seed is one job in a process of its own, on one thread (--jobs side by side); the seed picks the world
(under --data-root/seed-S), the initialisation and the data order, as demo.py --seed does. A finished job keeps its
result in --run-dir/<row settings>/seed-S/result.json and is not run again; a stopped one goes on from its last
epoch. At the end (also with nothing left to run) the tables are written: --run-dir/ablations.md (mean and
min-max Medium / Hard mAP over the seeds, beside the paper's numbers) and ablations.png.

--world cluttered (docs/ablations.md, which decided it before any of its results) runs the same rows with the same
recipe on the cluttered world (datasets.synthetic's scene="cluttered"), with everything under --data-root/cluttered/
and --run-dir/cluttered/ instead of --data-root/ and --run-dir/.
"""

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from datasets.synthetic import SCENE_HELP, SCENES
from experiments.report import markdown, plot
from experiments.runner import load_result, plan, run_jobs
from experiments.tables import PAPER_TABLES, TABLES
from training.recipes import DEMO, QUICK
from utils import checks
from utils.atomic import atomic_write
from utils.errors import InputError, fail_cleanly
from utils.paths import writable_folder


def get_args_parser():
    parser = argparse.ArgumentParser(prog="python -m experiments.ablations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", choices=tuple(TABLES), default=list(PAPER_TABLES), metavar="T",
                        help=f"tables to run: {', '.join(TABLES)} (gap: ours, Token and GeM with 2x and 4x the "
                             "epochs and with 128 px crops; temperature: ours, Token with its tokenizer's logits "
                             f"divided by 16 = sqrt(d)) (default: {' '.join(PAPER_TABLES)})")
    parser.add_argument("--seeds", nargs="+", type=checks.SEED, default=[0, 1, 2], metavar="S",
                        help="seeds of the world, initialisation and data order (default: 0 1 2)")
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                        help="only these rows of the tables (by key, e.g. full spoc L8; default: every row)")
    parser.add_argument("--jobs", type=checks.int_in(1, 64), default=min(2, os.cpu_count() or 1),
                        help="processes that run jobs side by side, one thread each (default: 2, 1 on one core)")
    parser.add_argument("--data-root", default="data/ablations",
                        help="folder of the worlds, one per seed (seed-S/; cluttered/seed-S/ with --world cluttered)")
    parser.add_argument("--run-dir", default="runs/ablations",
                        help="folder of the jobs' checkpoints and results, and of ablations.md and ablations.png "
                             "(with --world cluttered: its subfolder cluttered/)")
    parser.add_argument("--world", choices=SCENES, default="plain",
                        help=f"the world (datasets.synthetic --scene): {SCENE_HELP}; the cluttered world's worlds "
                             "and jobs go under --data-root/cluttered and --run-dir/cluttered (default: plain)")
    parser.add_argument("--quick", action="store_true",
                        help="the demo's tiny recipe (a few images, one epoch): checks the pipeline, not the models")
    parser.add_argument("--dry-run", action="store_true",
                        help="train nothing: list the jobs, done or to run, and write the tables of those done")
    return checks.check_flags(parser)


def selected_tables(args):
    """The chosen tables, each with only the --rows named (an unknown row name is an InputError)."""
    tables = {name: TABLES[name] for name in args.tables}
    if args.rows is None:
        return tables
    known = {row.key for table in tables.values() for row in table.rows}
    unknown = sorted(set(args.rows) - known)
    if unknown:
        raise InputError(f"--rows {' '.join(unknown)}: not a row of table(s) {' '.join(tables)} "
                         f"(rows: {' '.join(sorted(known))})")
    return {name: type(table)(table.title, table.claim, tuple(r for r in table.rows if r.key in args.rows))
            for name, table in tables.items() if any(r.key in args.rows for r in table.rows)}


def world_recipe(args):
    """``(recipe, data root, run folder)`` of the --world: the plain one keeps --data-root and --run-dir, another
    one's world and jobs go into a subfolder of each named after it."""
    base = QUICK if args.quick else DEMO
    if args.world == "plain":
        return base, args.data_root, args.run_dir
    return (replace(base, world={**base.world, "scene": args.world}), str(Path(args.data_root) / args.world),
            str(Path(args.run_dir) / args.world))


def write_tables(tables, jobs, run_dir):
    """ablations.md and ablations.png under ``run_dir`` from the finished jobs; their paths."""
    results = {}
    for job in jobs:
        result = load_result(job)
        if result is not None:
            results.setdefault(job.row.job, {})[job.seed] = result
    text = markdown(tables, results)
    md = Path(run_dir) / "ablations.md"
    md.parent.mkdir(parents=True, exist_ok=True)  # a dry run before any job has not made it
    atomic_write(md, lambda f: f.write(text.encode()))
    return text, [md, plot(tables, results, Path(run_dir) / "ablations.png")]


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    tables = selected_tables(args)
    base, data_root, run_dir = world_recipe(args)
    rows = [row for table in tables.values() for row in table.rows]
    jobs = plan(rows, list(dict.fromkeys(args.seeds)), base, data_root, run_dir)
    for job in jobs:  # bad settings stop here, before any work
        job.training_args()
    writable_folder(args.run_dir, "--run-dir")
    started, failed = time.time(), []
    if args.dry_run:
        for job in jobs:
            print(f"{'done' if load_result(job) else 'to run'}: {job.name} -> {job.folder}")
    else:
        writable_folder(args.data_root, "--data-root")
        failed = run_jobs(jobs, args.jobs)
    text, written = write_tables(tables, jobs, run_dir)
    print(f"\n{(time.time() - started) / 60:.1f} min\n\n{text}\nwrote {', '.join(map(str, written))}")
    if failed:
        print(f"error: {len(failed)} job(s) failed: {', '.join(failed)} (run again to retry them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
