"""The revisited evaluation at R1M scale: ``revisited_map`` against the naive method, on the same scores.

    python -m benchmarks.eval            # 1,000,000 database images x 70 queries
    python -m benchmarks.eval --quick    # 200,000 x 70 (CI)

The problem looks like ROxf + R1M: a score matrix of 1M database images x 70 queries (float32, as exact
search gives it); per query, easy / hard / junk lists drawn among the first 4,993 images (ROxf's database,
R1M's distractors following it), tens to hundreds each as in ROxf: easy 5-100, hard 10-250, junk 20-400.
Distractor scores are N(0.1, 0.05); labelled images score higher by a random margin (easy the most, junk the
least), so the rankings mix them with distractors and the mAPs are neither 0 nor 1.

- naive: revisitop's method, a full ranking of the database per query (``np.argsort`` of the query's column,
  stable, so that ties are broken by index as ``revisited_map`` breaks them), then ``compute_map`` for each of
  the Easy, Medium and Hard protocols;
- fast: ``retrieval.revisited.revisited_map``, which finds the ranks of the few labelled images without sorting the
  database.

Both run in one process on one thread, on the same scores; every mAP, AP and mP@k must be equal, which the
benchmark asserts (to 1e-12). Reported: both times (seconds for the whole evaluation, the fast one the median
of ``--repeats`` runs) and their ratio.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse
import time

import numpy as np

from benchmarks.common import machine, median_time, report_path, set_threads, table, timed, write_json
from retrieval.revisited import KAPPAS, PROTOCOLS, compute_map, protocol_gnd, revisited_map
from utils import checks
from utils.errors import fail_cleanly

ROXF_DB = 4993
EASY, HARD, JUNK = (5, 100), (10, 250), (20, 400)


def problem(n, queries, seed=0, labelled=ROXF_DB):
    """``(scores n x queries float32, gnd)``: synthetic scores and revisitop ground truth (see the docstring)."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n, queries), dtype=np.float32)
    scores *= 0.05
    scores += 0.1
    labelled = min(labelled, n)
    gnd = []
    for q in range(queries):
        sizes = [int(rng.integers(lo, hi + 1)) for lo, hi in (EASY, HARD, JUNK)]
        if sum(sizes) > labelled:
            sizes = [max(1, s * labelled // (2 * sum(sizes))) for s in sizes]
        chosen = rng.choice(labelled, sum(sizes), replace=False)
        easy, hard, junk = np.split(chosen, np.cumsum(sizes)[:2])
        for idx, margin in ((easy, 0.4), (hard, 0.25), (junk, 0.2)):
            scores[idx, q] += rng.uniform(0, margin, len(idx)).astype(np.float32)
        gnd.append({"bbx": (0.0, 0.0, 1.0, 1.0), "easy": np.sort(easy), "hard": np.sort(hard), "junk": np.sort(junk)})
    return scores, gnd


def naive(scores, gnd, kappas=KAPPAS):
    """revisitop's way: a full ranking per query, then ``compute_map`` per protocol; ``revisited_map``'s output."""
    ranks = np.empty(scores.shape, dtype=np.int64)
    for q in range(scores.shape[1]):
        ranks[:, q] = np.argsort(-scores[:, q], kind="stable")
    results = {}
    for name in PROTOCOLS:
        mean_ap, aps, mean_pr, prs = compute_map(ranks, protocol_gnd(gnd, name), kappas)
        results[name] = {"map": mean_ap, "aps": aps, "mp": mean_pr, "prs": prs}
    return results


def check_equal(fast, reference, tolerance=1e-12):
    """Raise unless every mAP, AP, mP@k and P@k of the two results agree to ``tolerance``; the largest gap."""
    gap = 0.0
    for name in PROTOCOLS:
        for key in ("map", "aps", "mp", "prs"):
            a, b = np.asarray(fast[name][key], dtype=np.float64), np.asarray(reference[name][key], dtype=np.float64)
            if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
                raise AssertionError(f"{name} {key}: the two methods disagree on shape or on queries left out")
            diff = float(np.nanmax(np.abs(a - b), initial=0.0))
            if diff > tolerance:
                raise AssertionError(f"{name} {key}: the two methods differ by {diff}")
            gap = max(gap, diff)
    return gap


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200,000 database images instead of 1,000,000 (CI)")
    parser.add_argument("--db", type=checks.int_in(1, 10**7), default=None,
                        help="database images (default 1,000,000; 200,000 with --quick); ROxf's 4,993 come first")
    parser.add_argument("--queries", type=checks.int_in(1, 10**4), default=70, help="queries (ROxf and RPar have 70)")
    parser.add_argument("--repeats", type=checks.int_in(1, 100), default=3,
                        help="runs of the fast method (median reported)")
    parser.add_argument("--seed", type=checks.SEED, default=0, help="seed of the scores and of the ground truth")
    parser.add_argument("--threads", type=checks.THREADS, default=1, help="threads of numpy's BLAS, torch and faiss")
    parser.add_argument("--out", default=None, help="JSON report (default runs/benchmarks/eval[-quick].json)")
    return checks.check_flags(parser)


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    n = args.db or (200_000 if args.quick else 1_000_000)
    out = report_path(args, "eval")
    set_threads(args.threads)
    (scores, gnd), make_s = timed(problem, n, args.queries, args.seed)
    labels = {key: [len(q[key]) for q in gnd] for key in ("easy", "hard", "junk")}
    print(f"{n:,} database images x {args.queries} queries (made in {make_s:.1f} s); per query "
          + ", ".join(f"{key} {min(v)}-{max(v)} (mean {np.mean(v):.0f})" for key, v in labels.items()), flush=True)

    reference, naive_s = timed(naive, scores, gnd)
    fast_s, fast = median_time(lambda: revisited_map(scores, gnd), args.repeats)
    gap = check_equal(fast, reference)
    speedup = naive_s / fast_s

    rows = [["naive: argsort per query + compute_map x 3", f"{naive_s:.2f}", f"{1000 * naive_s / args.queries:.1f}",
             "1.0"],
            ["revisited_map", f"{fast_s:.2f}", f"{1000 * fast_s / args.queries:.1f}", f"{speedup:.1f}"]]
    print(table(["method", "seconds (3 protocols)", "ms/query", "speed-up"], rows))
    print("mAP Easy / Medium / Hard: " + " / ".join(f"{100 * fast[p]['map']:.2f}" for p in PROTOCOLS)
          + f" (both methods; largest difference {gap:.1e})")
    report = {"benchmark": "eval", "quick": args.quick, "db": n, "queries": args.queries, "seed": args.seed,
              "threads": args.threads, "labels_per_query": {k: {"min": min(v), "max": max(v), "mean": float(np.mean(v))}
                                                            for k, v in labels.items()},
              "naive_s": naive_s, "fast_s": fast_s, "fast_repeats": args.repeats, "speedup": speedup,
              "max_abs_difference": gap, "equal": True,
              "mAP": {p: {"naive": reference[p]["map"], "fast": fast[p]["map"]} for p in PROTOCOLS},
              "mP@k": {p: dict(zip(map(str, KAPPAS), fast[p]["mp"], strict=True)) for p in PROTOCOLS},
              "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(out, report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
