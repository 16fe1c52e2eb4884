"""Search speed, memory and recall at R1M scale: exact float32, scalar-quantised and product-quantised indexes.

    python -m benchmarks.search            # 1M distractors (the first run also extracts)
    python -m benchmarks.search --quick    # 20k distractors, the demo's quick world (CI)

Descriptors that look like real ones: the benchmark extracts the descriptors of every image of the synthetic
world (its database, queries and training images; ``retrieval.extract.extract``, the evaluation protocol) with a
Token checkpoint (``--checkpoint``, default the demo's trained model; without it, a freshly initialised resnet18
Token, which the output says). The distractors are then sampled from a Gaussian with the empirical mean and
covariance of those real descriptors (its eigen-decomposition: the same mean, principal directions and
variances along them; directions of zero variance are left out), and L2-normalised, like descriptors. The
database is the ``synthetic`` test set's database followed by the sampled distractors, the queries are its
real queries, so the mAP of each index on ``synthetic`` + distractors is reported beside its speed. Recall and
latency are measured on more queries: the real queries followed by real training-image descriptors (not in the
database).

For every index: build time (training on a sample of ``--train-size`` database vectors, then adding all),
memory (bytes per image and the whole index, as faiss serialises it), per-query latency on one thread (queries
searched one at a time, top 100, median), batched throughput (all queries in one call, on every core),
recall@1/10/100 against exact search (the share of the exact top-k that the index returns in its top-k),
and Easy/Medium/Hard mAP. Descriptors are cached under ``runs/benchmarks/cache/``.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import common
from benchmarks.common import OUT_DIR, mib, table, timed
from datasets.revisitop import RevisitopImages, load_revisitop
from retrieval.extract import SCALES, extract, prepare_model
from retrieval.revisited import PROTOCOLS, revisited_map
from retrieval.search import R1M_COMPRESSED, CompressedSearch, ExactSearch, PQSearch
from utils import checks
from utils.errors import fail_cleanly

CACHE_DIR = OUT_DIR / "cache"


def world_images(world):
    """``(dataset, train paths)``: the world's revisitop test set and its training images, in id order."""
    return load_revisitop(world.root, world.test_name), world.train_image_paths()


def _cache_key(info, world, imsize):
    checkpoint = info["checkpoint"]
    stamp = None
    if checkpoint:
        stat = Path(checkpoint).stat()
        stamp = [os.path.abspath(checkpoint), stat.st_size, stat.st_mtime_ns]
    text = json.dumps({"model": stamp or [info["config"], info.get("seed")], "world": world.params,
                       "root": os.path.abspath(world.root), "imsize": imsize, "scales": SCALES}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def real_descriptors(model, info, world, imsize, workers=1, log=print):
    """``{"query", "db", "train"}`` descriptors of the world's images (float32, L2-normalised), cached."""
    key = _cache_key(info, world, imsize)
    cache = CACHE_DIR / f"descriptors-{key}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            return {name: data[name] for name in ("query", "db", "train")}
    dataset, train = world_images(world)
    sets = {"query": RevisitopImages(dataset.query_paths(), imsize, dataset.bbxs()),
            "db": RevisitopImages(dataset.db_paths(), imsize),
            "train": RevisitopImages(train, imsize)}
    total = sum(map(len, sets.values()))
    log(f"extracting {total} descriptors of the synthetic world (cached for later runs in {cache})")
    device = torch.device("cpu")
    model = prepare_model(model, device)
    dim = model.config.descriptor_dim
    start = time.perf_counter()
    out = {name: extract(model, images, dim, device, workers=workers) for name, images in sets.items()}
    log(f"extracted in {time.perf_counter() - start:.0f} s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def fit(real, variance=0.99):
    """A Gaussian fitted to ``real`` descriptors (n, d): ``(mean, factor, noise)``.

    The empirical covariance's leading principal directions, enough to hold ``variance`` of its trace, are kept
    exactly (``factor``: d x r, the directions scaled by their standard deviations); the remaining variance is
    spread evenly over all d dimensions (isotropic ``noise``, its standard deviation). Sampling is then
    ``mean + factor @ z_r + noise * z_d``, which keeps the cost of drawing a million d-dimensional vectors at
    r, not d, products per dimension.
    """
    x = np.asarray(real, dtype=np.float64)
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    r = int(np.searchsorted(np.cumsum(values) / values.sum(), variance)) + 1
    r = min(r, len(values))
    noise = float(np.sqrt(values[r:].sum() / len(values)))
    return mean, vectors[:, :r] * np.sqrt(values[:r]), noise


def sample(mean, factor, noise, n, seed, block=1 << 16):
    """``n`` L2-normalised draws from the fitted Gaussian, float32 (n, d), seeded."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.from_numpy(factor.T.astype(np.float32))
    mean = torch.from_numpy(mean.astype(np.float32))
    out = np.empty((n, len(mean)), dtype=np.float32)
    for start in range(0, n, block):
        m = min(block, n - start)
        x = torch.randn(m, rows.shape[0], generator=gen) @ rows
        x += torch.randn(m, rows.shape[1], generator=gen) * noise
        x += mean
        out[start:start + m] = torch.nn.functional.normalize(x, dim=1).numpy()
    return out


def stats(x, sample_size=2000, seed=0):
    """Mean and spread of the pairwise cosine similarities, and the variance share of the top 10 / 100 principal
    directions, of (a sample of) ``x``: what the real and sampled descriptors are compared on."""
    rng = np.random.default_rng(seed)
    x = x[np.sort(rng.choice(len(x), min(sample_size, len(x)), replace=False))].astype(np.float64)
    sims = (x @ x.T)[np.triu_indices(len(x), 1)]
    values = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1], 0, None)
    share = np.cumsum(values) / values.sum()
    return {"cosine_mean": float(sims.mean()), "cosine_std": float(sims.std()),
            "top10_variance": float(share[min(9, len(share) - 1)]),
            "top100_variance": float(share[min(99, len(share) - 1)])}


GOAL = {"ms_per_query": 5.0, "mib": 128.0, "recall@100": 0.9}
KS = (1, 10, 100)


def configurations(dim, quick):
    """``[(name, build(parts, train_size) -> index, nprobes or None)]``: every index the benchmark measures.

    PQ uses ``m`` = 64 sub-quantisers (64 bytes per image at 8 bits) when they divide the descriptor size;
    ``--quick`` uses 6-bit codes and fewer cells, which train in seconds.
    """
    m = max(k for k in (64, 32, 16, 8, 4, 2, 1) if dim % k == 0)
    bits = 6 if quick else 8
    nlist = 64 if quick else 512
    pick = R1M_COMPRESSED
    return [
        ("exact float32", lambda parts, size: ExactSearch(parts), None),
        ("float16", lambda parts, size: CompressedSearch(parts, "SQfp16", train_size=size), None),
        ("8-bit SQ", lambda parts, size: CompressedSearch(parts, "SQ8", train_size=size), None),
        (f"PQ{m}x{bits}", lambda parts, size: PQSearch(parts, m, bits, train_size=size), None),
        (f"IVF{nlist}-PQ{m}x{bits}", lambda parts, size: PQSearch(parts, m, bits, nlist, train_size=size),
         (16, 64) if quick else (16, 64, 128)),
        ("test.py --r1m pick",
         lambda parts, size: CompressedSearch(parts, pick["codec"], pick["dims"], pick["nlist"], pick["nprobe"],
                                             train_size=size),
         (32, 64, pick["nprobe"]) if quick else (32, 64, pick["nprobe"], 256)),
    ]


def set_nprobe(index, nprobe):
    if isinstance(index, PQSearch):
        index.index.nprobe = nprobe
    else:
        index.nprobe = nprobe


def _label(index, nprobe):
    """The index's label (``PQSearch`` writes its nprobe into it when built)."""
    if isinstance(index, PQSearch) and nprobe is not None:
        return index.label.rsplit("nprobe", 1)[0] + f"nprobe{nprobe}"
    return index.label


def latency(index, queries, budget_s, k=100):
    """Median seconds of one query's top-``k`` search, queries searched one at a time for about ``budget_s``
    (at least 3 queries, at most all); and how many were timed."""
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - start)
        if len(times) >= 3 and sum(times) > budget_s:
            break
    return statistics.median(times), len(times)


def recall(ids, truth, k):
    """Mean share of the exact top-``k`` that ``ids`` (queries x >= k) hold in their first ``k``."""
    pairs = zip(ids, truth, strict=True)
    return float(np.mean([len(np.intersect1d(found[:k], exact[:k])) / k for found, exact in pairs]))


def nn_recall(ids, truth, k):
    """Share of queries whose exact nearest neighbour is in the first ``k`` results (faiss's R@k)."""
    return float(np.mean([exact[0] in found[:k] for found, exact in zip(ids, truth, strict=True)]))


def measure(index, queries, real_queries, gnd, truth, threads, budget_s):
    """Latency on one thread, throughput of one batch of every query on ``threads``, recall, mAP."""
    common.set_threads(1)
    one, timed_queries = latency(index, queries, budget_s)
    common.set_threads(threads)
    (_, ids), batch_s = timed(index.search, queries, max(KS))
    results = revisited_map(index.scores(real_queries), gnd)
    entry = {"ms_per_query": 1000 * one, "latency_queries": timed_queries,
             "batch_queries_per_s": len(queries) / batch_s, "bytes_per_image": index.bytes_per_image,
             "memory_bytes": index.memory_bytes, "memory_mib": mib(index.memory_bytes),
             "memory_mib_per_1M_images": mib(index.memory_bytes + index.bytes_per_image * (1_000_000 - index.n)),
             "mAP": {p: 100 * results[p]["map"] for p in PROTOCOLS}}
    if truth is not None:
        entry.update({f"recall@{k}": recall(ids, truth, k) for k in KS})
        entry.update({f"nn_recall@{k}": nn_recall(ids, truth, k) for k in KS})
    return entry, ids


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="20,000 distractors, the demo's quick world at --imsize 64, small codes (CI)")
    parser.add_argument("--checkpoint", default=common.DEFAULT_CHECKPOINT,
                        help="Token checkpoint; when missing, a freshly initialised resnet18 Token")
    parser.add_argument("--data-dir", default=common.DEFAULT_DATA_DIR,
                        help="the demo's synthetic world (generated with the demo's parameters when missing)")
    parser.add_argument("--distractors", type=checks.int_in(100, 10**7), default=None,
                        help="sampled distractors (1,000,000; 20,000 quick)")
    parser.add_argument("--queries", type=checks.int_in(1, 10**4), default=None,
                        help="queries for latency, throughput and recall: the real queries, then real training "
                             "descriptors (100; 40 quick)")
    parser.add_argument("--train-size", type=checks.int_in(256, 10**7), default=None,
                        help="database vectors that train the scalar quantisers, projections and IVF cells "
                             "(65,536; 8,192 quick)")
    parser.add_argument("--pq-train-size", type=checks.int_in(256, 10**7), default=None,
                        help="database vectors that train PQ and IVF-PQ, whose 8-bit k-means is the slowest to train "
                             "(20,000; 4,096 quick)")
    parser.add_argument("--imsize", type=checks.IMSIZE, default=None,
                        help="evaluation image size (the demo's --test-imsize; 64 quick)")
    parser.add_argument("--threads", type=checks.THREADS, default=os.cpu_count() or 1,
                        help="threads for building and for the batched search (latency is on one thread)")
    parser.add_argument("--latency-budget", type=float, default=None,
                        help="seconds of one-at-a-time queries per index for the latency (3; 0.5 quick)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="measure only the configurations whose name starts with one of these (exact search "
                             "always runs: it is the ground truth)")
    parser.add_argument("--seed", type=checks.SEED, default=0,
                        help="seed of the distractors, the query choice and the model")
    parser.add_argument("--out", default=None, help="JSON report (default runs/benchmarks/search[-quick].json)")
    return checks.check_flags(parser)


def _settings(args):
    quick = args.quick
    return {"distractors": args.distractors or (20_000 if quick else 1_000_000),
            "queries": args.queries or (40 if quick else 100),
            "train_size": args.train_size or (8192 if quick else 65_536),
            "pq_train_size": args.pq_train_size or (4096 if quick else 20_000),
            "imsize": args.imsize or common.recipe(quick).test_imsize,
            "latency_budget": args.latency_budget if args.latency_budget is not None else (0.5 if quick else 3.0)}


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    out = common.report_path(args, "search")
    settings = _settings(args)
    start_all = time.perf_counter()
    common.set_threads(args.threads)
    model, info = common.benchmark_model(args.checkpoint, args.seed)  # a bad checkpoint stops here, before the world
    world = common.synthetic_world(args.data_dir, args.quick)
    print(info["note"], flush=True)
    real = real_descriptors(model, info, world, settings["imsize"], log=lambda m: print(m, flush=True))
    dim = real["db"].shape[1]
    gnd = load_revisitop(world.test_root.parent, world.test_name).gnd

    pool = np.concatenate([real["query"], real["db"], real["train"]])
    (mean, factor, noise), fit_s = timed(fit, pool)
    distractors, sample_s = timed(sample, mean, factor, noise, settings["distractors"], args.seed)
    distribution = {"real": stats(pool, seed=args.seed), "sampled": stats(distractors, seed=args.seed),
                    "real_descriptors": len(pool), "principal_directions_kept": factor.shape[1],
                    "noise_std": noise, "fit_s": fit_s, "sample_s": sample_s}
    print(f"{settings['distractors']:,} distractors drawn in {sample_s:.0f} s from a Gaussian fitted to {len(pool)} "
          f"real {dim}-d descriptors ({factor.shape[1]} principal directions kept exactly, isotropic noise for "
          "the rest), L2-normalised")
    for name in ("real", "sampled"):
        st = distribution[name]
        print(f"  {name:7s}: cosine {st['cosine_mean']:.3f} +- {st['cosine_std']:.3f}, variance in the top 10 / 100 "
              f"principal directions {st['top10_variance']:.2f} / {st['top100_variance']:.2f}")

    parts = [real["db"], distractors]
    n = sum(map(len, parts))
    rng = np.random.default_rng(args.seed)
    extra = max(0, min(settings["queries"] - len(real["query"]), len(real["train"])))
    chosen = np.sort(rng.choice(len(real["train"]), extra, replace=False))
    queries = np.concatenate([real["query"], real["train"][chosen]])
    exact_db = ExactSearch([real["db"]])
    small = revisited_map(exact_db.scores(real["query"]), gnd)
    print(f"database: {len(real['db'])} synthetic images + {settings['distractors']:,} distractors = {n:,}; "
          f"{len(queries)} queries ({len(real['query'])} real synthetic queries, the rest real training "
          f"descriptors); exact mAP E/M/H without distractors: "
          + " / ".join(f"{100 * small[p]['map']:.2f}" for p in PROTOCOLS), flush=True)

    rows, report_configs, truth = [], [], None
    for name, build, nprobes in configurations(dim, args.quick):
        if truth is not None and args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        common.set_threads(args.threads)
        size = settings["pq_train_size"] if name.startswith(("PQ", "IVF")) else settings["train_size"]
        index, build_s = timed(build, parts, size)
        for nprobe in nprobes or (None,):
            if nprobe is not None:
                set_nprobe(index, nprobe)
            label = name if nprobe is None else f"{name}, nprobe {nprobe}"
            entry, ids = measure(index, queries, real["query"], gnd, truth, args.threads, settings["latency_budget"])
            if truth is None:  # exact float32 comes first: it is the ground truth
                truth = ids
                entry.update({f"recall@{k}": 1.0 for k in KS}, **{f"nn_recall@{k}": 1.0 for k in KS})
            entry.update({"name": label, "index": _label(index, nprobe), "build_s": build_s, "nprobe": nprobe})
            entry["meets_goal"] = bool(entry["ms_per_query"] <= GOAL["ms_per_query"]
                                       and entry["memory_mib_per_1M_images"] <= GOAL["mib"]
                                       and entry["recall@100"] >= GOAL["recall@100"])
            report_configs.append(entry)
            rows.append([label, entry["index"], entry["bytes_per_image"], f"{entry['memory_mib']:.0f}",
                         f"{build_s:.0f}",
                         f"{entry['ms_per_query']:.2f}", f"{entry['batch_queries_per_s']:.0f}",
                         *(f"{entry[f'recall@{k}']:.3f}" for k in KS), f"{entry['nn_recall@100']:.2f}",
                         " / ".join(f"{entry['mAP'][p]:.2f}" for p in PROTOCOLS)])
            print(f"{label}: {entry['ms_per_query']:.2f} ms/query, {entry['memory_mib']:.0f} MiB, "
                  f"recall@100 {entry['recall@100']:.3f}", flush=True)
        del index

    print(f"\n{n:,} images of {dim} dimensions (MiB: the index as built; the goal is checked on its size for 1M "
          "images); latency: one query at a time on 1 thread (median); batch: "
          f"{len(queries)} queries in one call on {args.threads} threads")
    print(table(["index", "label", "B/image", "MiB", "build s", "ms/query", "batch q/s", "recall@1", "recall@10",
                 "recall@100", "NN in top 100", "mAP E / M / H (+distractors)"], rows))
    print("recall@k: share of the exact top k found in the index's top k; NN in top 100: share of queries whose "
          "exact nearest neighbour is in the top 100 (faiss's R@100)")
    winners = [c["name"] for c in report_configs if c["meets_goal"]]
    print(f"goal (<= {GOAL['ms_per_query']:g} ms/query, <= {GOAL['mib']:g} MiB per 1M images, "
          f"recall@100 >= {GOAL['recall@100']}): " + (", ".join(winners) if winners else "met by none"))
    report = {"benchmark": "search", "quick": args.quick, "model": info, "settings": settings, "dim": dim,
              "database_images": n, "real_database_images": len(real["db"]), "queries": len(queries),
              "real_queries": len(real["query"]),
              "threads": args.threads, "distribution": distribution,
              "mAP_without_distractors": {p: 100 * small[p]["map"] for p in PROTOCOLS}, "goal": GOAL,
              "configs": report_configs, "meets_goal": winners, "total_s": time.perf_counter() - start_all,
              "machine": common.machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    common.write_json(out, report)
    print(f"wrote {out} ({report['total_s']:.0f} s in all)")
    return report


if __name__ == "__main__":
    main()
