"""Where index.py switches from exact to compressed search: query latency of both at a few database sizes.

    python -m benchmarks.index             # 10k, 30k and 100k images of 1024 dimensions (~1 min)
    python -m benchmarks.index --quick     # 2k and 8k (CI)

For each size: the two search structures ``retrieval.image_index.search_structure`` builds (exact inner product,
faiss IndexFlatIP; the compressed index of test.py --r1m), their build time, the median latency of one query's
top-10 search on one thread (what ``index.py query`` does per image), and the compressed index's recall@10
against exact search. The descriptors are L2-normalised draws from a Gaussian whose variance lies mostly in 128
random directions around a common mean (``gaussian``, ``benchmarks.search.sample``), seeded; latency does not
depend on them, recall does (the search benchmark of docs/benchmarks.md measures it on descriptors shaped like
real ones).
Exact search costs time in proportion to the images: a line through the origin fitted to its latencies gives the
size at which it reaches ``EXACT_BUDGET_MS``, which ``EXACT_MAX_IMAGES`` was set from.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse

import numpy as np

from benchmarks import common
from benchmarks.common import table, timed
from benchmarks.search import latency, recall, sample
from retrieval.image_index import EXACT_MAX_IMAGES, search_structure
from utils import checks
from utils.errors import fail_cleanly

# exact search while one query takes less: below the cost of the query image's own descriptor (~100 ms for the
# demo's resnet18 on the CPU, docs/benchmarks.md), and nothing lost to compression
EXACT_BUDGET_MS = 50.0
K = 10
QUERIES = 200
NOISE = 0.02  # isotropic standard deviation added in every dimension


def gaussian(dim, rank=128, seed=0, cosine=0.4):
    """``(mean, factor)`` of a Gaussian whose variance lies in ``rank`` random directions, decreasing, around a
    mean that gives its unit draws a mean pairwise cosine of about ``cosine`` (real descriptors: 0.43,
    docs/benchmarks.md)."""
    rank = min(rank, dim - 1)
    basis = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, rank + 1)))[0]
    factor = basis[:, 1:] * np.linspace(1, 0.1, rank)
    spread = float((factor ** 2).sum())
    return basis[:, 0] * np.sqrt(cosine * spread / (1 - cosine)), factor


def measure(n, dim, budget_s, seed=0):
    mean, factor = gaussian(dim)
    database = sample(mean, factor, NOISE, n, seed)
    queries = sample(mean, factor, NOISE, QUERIES, seed + 1)
    row = {"images": n}
    found = {}
    for kind in ("exact", "compressed"):
        index, build_s = timed(search_structure, database, kind)
        seconds, timed_queries = latency(index, queries, budget_s, K)
        found[kind] = index.search(queries, K)[1]
        row[kind] = {"build_s": build_s, "ms_per_query": 1000 * seconds, "queries_timed": timed_queries}
    row["compressed"]["recall@10"] = recall(found["compressed"], found["exact"], K)
    return row


def get_args_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.index", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=checks.int_in(1000, 10**7), nargs="+",
                        help="database sizes (default 10k 30k 100k; --quick 2k 8k)")
    parser.add_argument("--dim", type=checks.int_in(16, 8192), default=1024, help="descriptor size")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds of single-query timing per structure")
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--out", help="JSON report (default runs/benchmarks/index.json)")
    return checks.check_flags(parser)


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    out = common.report_path(args, "index")
    sizes = args.sizes or ([2000, 8000] if args.quick else [10_000, 30_000, 100_000])
    common.set_threads(1)
    rows = [measure(n, args.dim, args.budget) for n in sizes]
    n = np.array([row["images"] for row in rows], dtype=np.float64)
    ms = np.array([row["exact"]["ms_per_query"] for row in rows])
    crossing = int(EXACT_BUDGET_MS / (n @ ms / (n @ n)))
    print(table(["images", "exact ms/query", "compressed ms/query", "compressed recall@10", "exact build s",
                 "compressed build s"],
                [[f"{r['images']:,}", f"{r['exact']['ms_per_query']:.2f}", f"{r['compressed']['ms_per_query']:.2f}",
                  f"{r['compressed']['recall@10']:.3f}", f"{r['exact']['build_s']:.2f}",
                  f"{r['compressed']['build_s']:.2f}"] for r in rows]))
    print(f"exact search reaches {EXACT_BUDGET_MS:g} ms per query at about {crossing:,} images (a line through the "
          f"measured latencies); index.py switches to compressed above {EXACT_MAX_IMAGES:,} images")
    report = {"machine": common.machine(), "dim": args.dim, "k": K, "exact_budget_ms": EXACT_BUDGET_MS,
              "exact_budget_reached_at": crossing, "exact_max_images": EXACT_MAX_IMAGES, "rows": rows}
    print(f"wrote {common.write_json(out, report)}")
    return report


if __name__ == "__main__":
    main()
