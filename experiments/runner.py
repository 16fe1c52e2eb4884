"""The ablation rows trained and evaluated on the synthetic world with the demo's recipe, one process per job.

A job is one row's settings (``Row.job``) and one seed: the seed picks the world (generated under
``data_root/seed-<S>``), the initialisation and the data order, as ``demo.py --seed`` does. Each job trains with
``training.run.train`` (train.py's flags from ``DemoRecipe.train_flags``, ``--resume auto``: a stopped job goes on
from its last epoch), evaluates ``last.pth`` as test.py does (``DemoRecipe.eval_settings``) and writes
``run_dir/<job>/seed-<S>/result.json`` atomically; a job with that file is done and is not run again. Rows of
different tables with the same settings (the full Token is in every table) share one job.
"""

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from datasets.gldv2 import load_gldv2
from datasets.synthetic import ensure_generated
from retrieval.evaluation import EvalSettings, evaluate_checkpoint
from retrieval.revisited import PROTOCOLS
from training.options import check_args, parse_args
from training.run import train
from utils.atomic import read_json, save_json
from utils.distributed import DistEnv

CPU = DistEnv(0, 1, torch.device("cpu"))
RESULT = "result.json"


@dataclass(frozen=True)
class Job:
    row: object  # experiments.tables.Row
    seed: int
    recipe: object  # training.recipes.DemoRecipe of this row and seed

    @property
    def name(self):
        return f"{self.row.job} seed {self.seed}"

    @property
    def folder(self):
        return Path(self.recipe.run_dir)

    @property
    def result_path(self):
        return self.folder / RESULT

    def training_args(self, progress=False):
        """train.py's parsed and checked flags of this job (``--resume auto``: it goes on where it stopped)."""
        args = parse_args([*self.recipe.train_flags("token", progress), "--resume", "auto"])
        check_args(args, CPU)
        return args


def world_root(data_root, seed):
    return str(Path(data_root) / f"seed-{seed}")


def plan(rows, seeds, base, data_root, run_dir):
    """The jobs of ``rows`` x ``seeds`` with the recipe ``base``, each row's settings once, seed by seed (so that a
    partial run covers every row)."""
    jobs, seen = [], set()
    for seed in seeds:
        for row in rows:
            if (row.job, seed) in seen:
                continue
            seen.add((row.job, seed))
            recipe = replace(base, model={**base.model, **row.model}, seed=seed, data_root=world_root(data_root, seed),
                             run_dir=str(Path(run_dir) / row.job / f"seed-{seed}"), **row.recipe)
            jobs.append(Job(row, seed, recipe))
    return jobs


def load_result(job):
    """The job's stored result, or None when it has not finished."""
    return read_json(job.result_path) if job.result_path.is_file() else None


def prepare(jobs):
    """Generate each seed's world and its train/val split before the jobs start (they would race to build them)."""
    for recipe in {job.recipe.data_root: job.recipe for job in jobs}.values():
        ensure_generated(recipe.data_root, seed=recipe.seed, **recipe.world)
        args = parse_args(recipe.train_flags("token"))
        load_gldv2(args.data_root, args.csv, args.split_seed, args.val_fraction, args.cache_dir)


def run_job(job):
    """Train and evaluate ``job`` in this process on one thread; its result, also written to ``result.json``."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [{job.name}] %(message)s", datefmt="%H:%M:%S",
                        force=True)
    started = time.time()
    args = job.training_args()
    train(args, CPU)
    checkpoint = Path(args.output_dir) / "last.pth"
    settings = EvalSettings(**job.recipe.eval_settings(checkpoint, job.folder / "token" / "eval", False))
    exact = evaluate_checkpoint(settings, CPU)["datasets"]["synthetic"]["runs"]["exact"]
    result = {"mAP": {protocol: exact[protocol]["mAP"] for protocol in PROTOCOLS}, "job": job.row.job,
              "seed": job.seed, "minutes": (time.time() - started) / 60, "recipe": job.recipe.__dict__}
    save_json(job.result_path, result)
    return result


def run_jobs(jobs, workers, report=print):
    """Run the unfinished ``jobs`` in ``workers`` processes, a fresh one per job; ``report`` gets a line per job
    started, skipped or done. Returns the names of the jobs that failed (each one's error is reported)."""
    todo = [job for job in jobs if load_result(job) is None]
    for job in jobs:
        if job not in todo:
            report(f"done before: {job.name} ({job.result_path})")
    if not todo:
        return []
    prepare(todo)
    failed = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_job, job): job for job in todo}
        report(f"running {len(todo)} job(s) in {workers} process(es) of one thread")
        for count, future in enumerate(as_completed(futures), 1):
            job = futures[future]
            try:
                result = future.result()
            except Exception as err:  # one bad job must not stop the others; its error is reported
                failed.append(job.name)
                report(f"[{count}/{len(todo)}] FAILED {job.name}: {err.__class__.__name__}: {err}")
                continue
            mAP = result["mAP"]
            report(f"[{count}/{len(todo)}] {job.name}: Medium {mAP['medium']:.2f}, Hard {mAP['hard']:.2f} "
                   f"({result['minutes']:.1f} min)")
    return failed
