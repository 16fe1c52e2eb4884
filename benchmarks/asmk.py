"""Memory per image and query time of our ASMK (test.py --local-features asmk) on a simulated database, and what
they mean for R1M.

    nice python -m benchmarks.asmk                    # 100k images of 1000 features, 65,536 words (~15 min)
    python -m benchmarks.asmk --images 2000 --quick   # CI-sized

Simulated local features, shaped like HOW's (whitened, so about unit variance per dimension; images made of
repeated patterns): a codebook of ``--words`` centroids drawn from a standard normal in 128 dimensions; each
image draws ``PATTERNS`` of them and its ``--features`` features from those patterns, each feature its pattern
plus Gaussian noise (standard deviation ``NOISE`` per dimension), so that an image covers about 530 distinct
words, as real images cover several hundred.

Steps, each timed: (1) ``--quantised`` images go through ``retrieval.asmk.ASMKSearch`` as the evaluation builds
it (flat L2 quantisation against the codebook, aggregation, binarisation, the inverted file in chunks): the
build time per image. (2) Their inverted-file entries are copied with new image ids until the database holds
``--images`` images (the package's ``IVF.add``, which the builder calls; quantising 100k images this way would
take a day on a 2-core CPU, see the build time): the posting lists then have the length that ``--images`` real
images give. (3) Memory: the inverted file's arrays (what ``ASMKSearch.memory_bytes`` counts: 128-bit codes,
an int64 image id per entry, a float64 norm per image), as allocated (the package grows arrays by 1.5x), and
the process's resident memory before and after. (4) ``--queries`` simulated queries of ``--features``
features, multiple assignment 5: the query time through ``ASMKSearch.scores``, and the part of it that is the
quantisation of the query's features (independent of the database size). The R1M figures extrapolate these
(``for_r1m``).
"""

import argparse
import resource

import numpy as np

from benchmarks import common
from benchmarks.common import table, timed
from retrieval.asmk import ASMKParams, ASMKSearch
from utils import checks
from utils.errors import fail_cleanly

DIM = 128
PATTERNS = 700  # distinct patterns an image draws its features from
NOISE = 0.35  # per-dimension standard deviation of a feature around its pattern


def rss_bytes():
    """The process's resident memory now (Linux /proc), bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def simulated_images(centroids, count, features, seed):
    """``count`` images of ``features`` local features each (list of float32 (features, 128))."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        patterns = centroids[rng.choice(len(centroids), PATTERNS, replace=False)]
        chosen = patterns[rng.integers(0, PATTERNS, features)]
        images.append((chosen + NOISE * rng.standard_normal(chosen.shape)).astype(np.float32))
    return images


def grow(index, images):
    """Copy the inverted-file entries of ``index`` with new image ids until it holds ``images`` images."""
    ivf = index.method.inverted_file
    words, codes, ids = index.entries()
    built = index.n
    while index.n < images:
        copies = min(built, images - index.n)
        keep = ids < copies
        ivf.add(codes[keep], words[keep], ids[keep] + index.n)
        index.n += copies


def allocated_bytes(index):
    """Bytes the inverted file's arrays hold, including the room the package keeps for growth."""
    ivf = index.method.inverted_file
    return sum(v.nbytes + i.nbytes for v, i in zip(ivf.ivf_vecs, ivf.ivf_image_ids, strict=True) if v is not None) \
        + np.asarray(ivf.norm_factor).nbytes


def counted_bytes(index):
    """``ASMKSearch.memory_bytes`` recounted after ``grow``: the entries and norms in use."""
    ivf = index.method.inverted_file
    return sum(int(c) * (v.itemsize * v.shape[1] + i.itemsize)
               for v, i, c in zip(ivf.ivf_vecs, ivf.ivf_image_ids, ivf.counts, strict=True) if v is not None) \
        + 8 * len(ivf.norm_factor)


def measure(args):
    rng = np.random.default_rng(args.seed)
    centroids = rng.standard_normal((args.words, DIM)).astype(np.float32)
    rss_before = rss_bytes()
    database = simulated_images(centroids, args.quantised, args.features, args.seed + 1)
    index, build_s = timed(ASMKSearch, centroids, [database], ASMKParams())
    del database
    entries_per_image = len(index.entries()[0]) / index.n
    queries = simulated_images(centroids, args.queries, args.features, args.seed + 2)
    _, grow_s = timed(grow, index, args.images)
    rss_after = rss_bytes()
    _, query_s = timed(index.scores, queries)
    codebook_index = index.method.codebook.search_index
    _, quantise_s = timed(lambda: [codebook_index.search(q, ASMKParams().ma_query) for q in queries])
    counted, allocated = counted_bytes(index), allocated_bytes(index)
    return {"images": index.n, "quantised_images": args.quantised, "features": args.features, "words": args.words,
            "queries": args.queries, "build_s_per_image": build_s / args.quantised, "grow_s": grow_s,
            "word_entries_per_image": entries_per_image,
            "bytes_per_image": counted / index.n, "allocated_bytes_per_image": allocated / index.n,
            "rss_growth_bytes_per_image": (rss_after - rss_before) / index.n,
            "query_ms": 1000 * query_s / args.queries, "query_quantisation_ms": 1000 * quantise_s / args.queries}


def for_r1m(row, images=1_001_001):
    """The measurements extrapolated to ``images``: memory in proportion; of the query time, the quantisation as
    measured and the rest (the scan of the posting lists, whose length grows with the database) in proportion;
    the build time per image."""
    search_ms = max(0.0, row["query_ms"] - row["query_quantisation_ms"])
    return {"images": images, "gib": row["bytes_per_image"] * images / 2 ** 30,
            "allocated_gib": row["allocated_bytes_per_image"] * images / 2 ** 30,
            "query_ms": row["query_quantisation_ms"] + search_ms * images / row["images"],
            "build_hours": row["build_s_per_image"] * images / 3600}


def get_args_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asmk", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=checks.int_in(1, 10**7), default=100_000,
                        help="images in the simulated database (the posting lists' length)")
    parser.add_argument("--quantised", type=checks.int_in(1, 10**6), default=200,
                        help="images quantised and aggregated for real; the database is made of copies of their "
                             "entries")
    parser.add_argument("--features", type=checks.int_in(1, 100_000), default=1000, help="local features an image")
    parser.add_argument("--words", type=checks.int_in(PATTERNS, 2**20), default=65536, help="codebook size")
    parser.add_argument("--queries", type=checks.int_in(1, 10_000), default=10, help="queries timed")
    parser.add_argument("--threads", type=checks.THREADS, default=2, help="torch, faiss and BLAS threads")
    parser.add_argument("--seed", type=checks.SEED, default=0, help="seed of the simulated features")
    parser.add_argument("--quick", action="store_true", help="a small run for CI: 20 quantised images, 4,096 words, "
                                                             "2 queries, 100 features")
    parser.add_argument("--out", help="JSON report (default runs/benchmarks/asmk.json)")
    return checks.check_flags(parser)


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.quantised, args.words, args.queries, args.features = 20, 4096, 2, 100
        args.images = min(args.images, 2000)
    out = common.report_path(args, "asmk")
    common.set_threads(args.threads)
    row = measure(args)
    r1m = for_r1m(row)
    machine = common.machine()
    print(f"ASMK (binary, MA 1/5, {row['words']:,} words, {row['features']} features an image) on "
          f"{machine['cpu']}, {args.threads} threads")
    print(table(["images", "B/image (allocated, RSS)", "word entries/image", "query ms (quantisation)",
                 "build s/image"],
                [[f"{row['images']:,}", f"{row['bytes_per_image']:,.0f} ({row['allocated_bytes_per_image']:,.0f}, "
                  f"{row['rss_growth_bytes_per_image']:,.0f})", f"{row['word_entries_per_image']:.0f}",
                  f"{row['query_ms']:.0f} ({row['query_quantisation_ms']:.0f})", f"{row['build_s_per_image']:.2f}"]]))
    print(f"R1M ({r1m['images']:,} images): {r1m['gib']:.1f} GiB of inverted file ({r1m['allocated_gib']:.1f} GiB "
          f"allocated), about {r1m['query_ms']:.0f} ms a query, {r1m['build_hours']:.0f} h to quantise the database "
          "on this CPU")
    report = {"machine": machine, "threads": args.threads, "row": row, "r1m": r1m}
    print(f"wrote {common.write_json(out, report)}")
    return report


if __name__ == "__main__":
    main()
