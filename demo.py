"""The embedded demo: train and evaluate Token end to end on a generated landmark world, on a CPU.

1. generate the synthetic world under --data-root (GLDv2-clean-format training set, revisitop-format test set
   ``synthetic``), in the same layout as the real data;
2. train a small Token (resnet18 trunk, small images, from scratch) and a GeM baseline the same way, and evaluate
   an untrained Token (the default --models; the Table 1 baselines rmac, solar, delg, netvlad and apgem train the
   same way when named, and how-asmk / how-vlad / how-token train one HOW): the jobs run side by side in --jobs
   processes of one thread each;
3. evaluate each on the ``synthetic`` test set as test.py does (exact search, mAP Easy / Medium / Hard; the HOW
   rows: its local features with ASMK or VLAD, test.py --local-features, codebooks trained on the world's training
   images, and Token's aggregator trained on them, the HOW frozen, into ``aggregator/``);
4. print the table and draw the figures (training curves, retrievals, attention maps) of the trained Token.

The recipe (world size, models, schedule) is ``training.recipes.DEMO``; ``--quick`` runs ``QUICK``, the tiny
version CI runs. Every job computes on one thread, so the table does not depend on --jobs; it does depend on the
CPU's kernels (AVX2 or AVX-512), so another machine prints other numbers. Everything lands in --run-dir:
``results.json`` (the table), per model ``last.pth``, ``metrics.csv``, ``eval/results.json`` and
``eval/features/``, and ``figures/``.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from datasets.synthetic import ensure_generated
from networks import build_model
from retrieval.evaluation import EvalSettings, evaluate_checkpoint
from retrieval.figures import plot_attention, plot_retrievals
from retrieval.revisited import PROTOCOLS
from training.options import check_args, parse_args
from training.recipes import DEMO, QUICK
from training.run import train
from utils import checks
from utils.atomic import save_json
from utils.distributed import DistEnv
from utils.errors import fail_cleanly
from utils.paths import writable_folder
from utils.training_log import plot_training_curves
from weights import load_token, model_state, save_checkpoint

# --models name (also its folder under --run-dir) -> its row of the table, in the table's order
ROWS = {"untrained": "untrained Token", "token": "trained Token", "gem": "trained GeM baseline",
        "rmac": "trained R-MAC", "solar": "trained SOLAR", "delg": "trained DELG", "netvlad": "trained NetVLAD",
        "apgem": "trained AP-GeM", "how-asmk": "trained HOW + ASMK", "how-vlad": "trained HOW + VLAD",
        "how-token": "trained HOW + Token aggregator"}
DEFAULT_MODELS = ("token", "gem", "untrained")
# rows of one trained HOW: --models name -> test.py --local-features, or the aggregator trained on its features
LOCAL_ROWS = {"how-asmk": "asmk", "how-vlad": "vlad", "how-token": "aggregator"}
CPU = DistEnv(0, 1, torch.device("cpu"))


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="the tiny recipe (a few images, one epoch) that checks the pipeline end to end (CI)")
    parser.add_argument("--data-root", default=None,
                        help=f"data root that receives the synthetic world (default: {DEMO.data_root}, "
                             f"{QUICK.data_root} with --quick)")
    parser.add_argument("--run-dir", default=None,
                        help=f"folder that receives every output (default: {DEMO.run_dir}, {QUICK.run_dir} with "
                             "--quick)")
    parser.add_argument("--seed", type=checks.SEED, default=DEMO.seed, help="seed of the world and of every model")
    parser.add_argument("--epochs", type=checks.int_in(1, 1000), default=None,
                        help=f"training epochs of each model (default: the recipe's, {DEMO.epochs})")
    parser.add_argument("--models", nargs="+", choices=tuple(ROWS), default=list(DEFAULT_MODELS), metavar="NAME",
                        help="what to train and evaluate: token, gem (Token pooling by GeM, no tokens), untrained "
                             "(a Token evaluated at its initialisation), the Table 1 baselines rmac, solar, "
                             "delg, netvlad, apgem, and how-asmk, how-vlad, how-token (one HOW trained, its local "
                             "features evaluated with ASMK, VLAD, and with Token's aggregator trained on them, the "
                             f"HOW frozen) (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--jobs", type=checks.int_in(1, 64), default=min(2, os.cpu_count() or 1),
                        help="processes that run the models side by side, one thread each")
    parser.add_argument("--figures-dir", default=None,
                        help="also copy the figures here (the README's Figure/ is made with --figures-dir Figure)")
    return checks.check_flags(parser)


def recipe_of(args):
    """The recipe with this run's overrides: ``--seed``, ``--epochs``, ``--data-root``, ``--run-dir``."""
    recipe = QUICK if args.quick else DEMO
    overrides = {"seed": args.seed, "epochs": args.epochs, "data_root": args.data_root, "run_dir": args.run_dir}
    return replace(recipe, **{key: value for key, value in overrides.items() if value is not None})


def training_args(recipe, name, progress=True, extractor=None):
    """train.py's flags for the demo's model ``name`` (the aggregator: on the local features of ``extractor``),
    parsed and checked (before any work is done)."""
    args = parse_args(recipe.train_flags(name, progress, extractor))
    check_args(args, CPU)
    return args


@contextmanager
def job_logging(name):
    """The job ``name``'s INFO lines on stderr, prefixed by its row (the HOW job: "trained HOW"); the root logger as
    it was afterwards (with --jobs 1 the jobs run in the caller's process, whose logging must not change)."""
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{ROWS.get(name, 'trained HOW')}] %(message)s",
                                           datefmt="%H:%M:%S"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def run_model(recipe, name, progress, methods=()):
    """Train (or initialise) the model ``name`` and evaluate it, with progress bars or (side by side with other
    jobs) a log line per epoch: its rows of the table ({--models name: mAP per protocol}) and the figures it drew
    (the trained Token's). The job "how" trains one HOW and evaluates its local features with each of ``methods``
    ("asmk", "vlad"; "aggregator": Token's aggregator trained on them, the HOW frozen, evaluated as a global
    descriptor)."""
    torch.set_num_threads(1)
    with job_logging(name):
        return _train_and_evaluate(recipe, name, progress, methods)


def local_settings(recipe, checkpoint, out, method, progress):
    """test.py --local-features ``method`` of the trained HOW on the synthetic test set, codebooks trained on the
    world's training images (the default --codebook-images under the data root)."""
    return EvalSettings(**recipe.eval_settings(checkpoint, out / f"eval-{method}", progress), local=method,
                        asmk_words=recipe.asmk_words)


def _train_and_evaluate(recipe, name, progress, methods):
    if name == "untrained":
        out = Path(recipe.run_dir) / name
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(recipe.seed)
        checkpoint = out / "checkpoint.pth"
        save_checkpoint(model_state(build_model(recipe.config(name), pretrained=False)), checkpoint)
    else:
        args = training_args(recipe, name, progress)
        train(args, CPU)
        out, checkpoint = Path(args.output_dir), Path(args.output_dir) / "last.pth"
    if name == "how":
        return {row: local_row(recipe, checkpoint, out, method, progress) for row, method in LOCAL_ROWS.items()
                if method in methods}, []
    exact = global_row(recipe, checkpoint, out, progress)
    drawn = figures(recipe) if name == "token" else []  # while the other worker finishes
    return {name: exact}, drawn


def global_row(recipe, checkpoint, out, progress):
    """mAP per protocol of ``checkpoint``'s global descriptors on the synthetic test set, exact search."""
    report = evaluate_checkpoint(EvalSettings(**recipe.eval_settings(checkpoint, out / "eval", progress)), CPU)
    exact = report["datasets"]["synthetic"]["runs"]["exact"]
    logging.info("mAP Medium %.2f", exact["medium"]["mAP"])
    return {protocol: exact[protocol]["mAP"] for protocol in PROTOCOLS}


def local_row(recipe, how, out, method, progress):
    """mAP per protocol of the trained HOW ``how``'s local features with ``method``: ASMK or VLAD (test.py
    --local-features), or the aggregator, trained on them with the HOW frozen, then evaluated as a global model."""
    if method == "aggregator":
        args = training_args(recipe, method, progress, extractor=how)
        train(args, CPU)
        return global_row(recipe, Path(args.output_dir) / "last.pth", Path(args.output_dir), progress)
    runs = evaluate_checkpoint(local_settings(recipe, how, out, method, progress), CPU)
    run = runs["datasets"]["synthetic"]["runs"][method]
    logging.info("%s: mAP Medium %.2f", method, run["medium"]["mAP"])
    return {protocol: run[protocol]["mAP"] for protocol in PROTOCOLS}


def jobs_of(names):
    """``{job: methods}``: one job per model of ``names``, the trainings first and the untrained Token last; the HOW
    rows share one job, "how", that trains HOW once and evaluates it with each of their methods."""
    jobs = {name: () for name in ROWS if name in names and name not in LOCAL_ROWS and name != "untrained"}
    methods = tuple(LOCAL_ROWS[name] for name in ROWS if name in names and name in LOCAL_ROWS)
    if methods:
        jobs["how"] = methods
    if "untrained" in names:
        jobs["untrained"] = ()
    return jobs


def run_models(recipe, names, jobs):
    """The table's rows of the models ``names``, in ROWS order, and the figures drawn; the trainings start first."""
    names = [name for name in ROWS if name in names]
    if jobs == 1:
        done = [run_model(recipe, job, True, methods) for job, methods in jobs_of(names).items()]
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_model, recipe, job, False, methods) for job, methods in jobs_of(names).items()]
            done = [future.result() for future in futures]
    rows = {name: row for job_rows, _ in done for name, row in job_rows.items()}
    return {ROWS[name]: rows[name] for name in names}, [png for _, drawn in done for png in drawn]


def table(rows):
    lines = ["| model | Easy | Medium | Hard |", "|---|---|---|---|"]
    lines += [f"| {name} | " + " | ".join(f"{row[p]:.2f}" for p in PROTOCOLS) + " |" for name, row in rows.items()]
    return "\n".join(lines)


def figures(recipe):
    """The trained Token's training curves, top retrievals and attention maps; the paths of the PNGs written."""
    token = Path(recipe.run_dir) / "token"
    out = Path(recipe.run_dir) / "figures"
    queries = sorted((Path(recipe.data_root) / "test" / "synthetic" / "jpg").glob("query_*.jpg"))[:3]
    written = [plot_training_curves(token / "metrics.csv", out / "training_curves.png"),
               plot_retrievals(recipe.data_root, "synthetic", token / "eval" / "features", out / "retrievals.png"),
               plot_attention(load_token(token / "last.pth"), queries, out / "attention.png", recipe.test_imsize)]
    return [Path(png) for png in written]


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    recipe = recipe_of(args)
    for job, methods in jobs_of(args.models).items():  # bad settings stop here, before minutes of work
        if job != "untrained":
            training_args(recipe, job)
        if "aggregator" in methods:
            training_args(recipe, "aggregator", extractor=Path(recipe.run_dir) / "how" / "last.pth")
    writable_folder(recipe.data_root, "--data-root")
    writable_folder(recipe.run_dir, "--run-dir")
    if args.figures_dir:
        writable_folder(args.figures_dir, "--figures-dir")
    start = time.time()
    ensure_generated(recipe.data_root, seed=recipe.seed, **recipe.world)
    rows, written = run_models(recipe, args.models, args.jobs)
    if args.figures_dir:
        Path(args.figures_dir).mkdir(parents=True, exist_ok=True)
        written += [Path(shutil.copy(png, Path(args.figures_dir) / png.name)) for png in list(written)]
    minutes = (time.time() - start) / 60
    print(f"\nmAP (%) on the synthetic benchmark, {minutes:.1f} min with {args.jobs} process(es) of one thread\n")
    print(table(rows))
    summary = {"mAP": rows, "minutes": minutes, "jobs": args.jobs,
               "models": [name for name in ROWS if name in args.models], "recipe": recipe.__dict__}
    save_json(Path(recipe.run_dir) / "results.json", summary)
    print("\nwrote " + ", ".join(map(str, [Path(recipe.run_dir) / "results.json", *written])))
    return summary


if __name__ == "__main__":
    main()
