"""Evaluate Token on revisited Oxford and Paris, optionally with the 1M distractors: multi-scale descriptors, exact
or product-quantised search, alpha-QE and DBA; mAP and mP@1,5,10 under the Easy, Medium and Hard protocols.

    python test.py --checkpoint R101-Token.pth --data-root data
    python test.py --checkpoint R101-Token.pth --data-root data --r1m --output-dir runs/eval --pq 64 --qe --dba
    torchrun --nproc_per_node 4 test.py --checkpoint R101-Token.pth --data-root data --r1m --output-dir runs/eval

The protocol is TOKEN-FACTS' "Evaluation protocol": database images resized to a longer side of --imsize, queries
cropped to their box first; descriptors averaged over --scales; the database ranked by dot product.
"""

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from datasets.revisitop import R1M, RevisitopImages, load_revisitop
from networks import load_token
from retrieval.extract import SCALES, extract, prepare_model
from retrieval.features import SHARD_SIZE, FeatureStore, feature_key, save_json
from retrieval.revisited import KAPPAS, PROTOCOLS, format_results, revisited_map
from retrieval.search import ALPHA, R1M_COMPRESSED, TOP_K, TOP_N, CompressedIndex, ExactIndex, PQIndex, alpha_qe, dba
from utils.distributed import cleanup, init_distributed
from utils.errors import InputError, fail_cleanly


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data and model")
    data.add_argument("--checkpoint", required=True,
                      help="Token checkpoint: the authors' R50/R101-Token.pth or one written by train.py")
    data.add_argument("--data-root", required=True,
                      help="folder holding test/<dataset>/gnd_<dataset>.pkl and test/<dataset>/jpg/ "
                           "(python -m datasets.download revisitop builds it)")
    data.add_argument("--datasets", nargs="+", default=["roxford5k", "rparis6k"],
                      help="test sets under <data-root>/test/; any set in the revisitop format works")
    data.add_argument("--r1m", action="store_true",
                      help="also evaluate each dataset with the 1,001,001 R1M distractors "
                           "(<data-root>/test/revisitop1m/) added to its database; without --pq, that database is "
                           "searched exactly and with the compressed index benchmarks/search.py picked")
    extraction = parser.add_argument_group("extraction")
    extraction.add_argument("--imsize", type=int, default=1024,
                            help="longer side of the resized database images (queries keep their scale in them)")
    extraction.add_argument("--scales", type=float, nargs="+", default=list(SCALES),
                            help="scales of the multi-scale descriptor (1, sqrt 2, 1/sqrt 2)")
    extraction.add_argument("--batch-size", type=int, default=8,
                            help="images of equal size that go through the model together")
    extraction.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                            help="image-loading processes per extraction process")
    extraction.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                            help="auto: CUDA when available (one GPU per torchrun process), else CPU")
    extraction.add_argument("--amp", action="store_true",
                            help="float16 autocast on CUDA: faster; descriptors differ from float32 by its rounding")
    search = parser.add_argument_group("search")
    search.add_argument("--pq", type=int, default=None, metavar="M",
                        help="also search with faiss product quantisation: M sub-quantisers (M bytes per image "
                             "at 8 bits); M must divide the descriptor size")
    search.add_argument("--pq-bits", type=int, default=8, help="bits per PQ sub-quantiser code")
    search.add_argument("--ivf", type=int, default=None, metavar="NLIST",
                        help="with --pq: IVF-PQ with NLIST coarse cells instead of flat PQ (for R1M, e.g. 1024)")
    search.add_argument("--nprobe", type=int, default=16, help="IVF-PQ: cells visited per query")
    search.add_argument("--qe", action="store_true", help="also report alpha-QE (query expansion) on exact search")
    search.add_argument("--dba", action="store_true",
                        help="also report DBA (database-side augmentation) on exact search; with --qe, DBA + alpha-QE "
                             "too")
    search.add_argument("--alpha", type=float, default=ALPHA, help="alpha of alpha-QE and DBA")
    search.add_argument("--top-n", type=int, default=TOP_N, help="neighbours that alpha-QE and DBA add")
    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", default=None,
                        help="keep features/ (reused by a rerun with the same checkpoint and settings, resumed "
                             "after an interruption) and results.json here; required under torchrun; "
                             "default: a temporary folder, deleted at the end")
    output.add_argument("--shard-size", type=int, default=SHARD_SIZE,
                        help="images per feature shard: the unit that processes share and an interrupted run "
                             "resumes from")
    return parser


def check_args(args, env):
    if args.imsize < 32 or not args.scales or min(args.scales) <= 0:
        raise InputError("--imsize must be at least 32 and every --scales value positive")
    if args.batch_size < 1 or args.workers < 0 or args.shard_size < 1 or args.top_n < 1 or args.alpha < 0:
        raise InputError("--batch-size, --shard-size and --top-n must be positive, --workers and --alpha at least 0")
    if R1M in args.datasets:
        raise InputError(f"{R1M} has no queries: pass --r1m to add it to the databases of --datasets")
    if args.pq is not None and (args.pq < 1 or not 1 <= args.pq_bits <= 16):
        raise InputError("--pq must be positive and --pq-bits between 1 and 16")
    if args.ivf is not None and (args.pq is None or args.ivf < 1 or not 1 <= args.nprobe <= args.ivf):
        raise InputError("--ivf NLIST needs --pq M, NLIST positive and --nprobe between 1 and NLIST")
    if args.amp and env.device.type != "cuda":
        raise InputError("--amp runs float16 autocast on CUDA; this run is on the CPU")
    if env.distributed and args.output_dir is None:
        raise InputError("under torchrun, --output-dir is required: the processes exchange features through it "
                         "(a folder every process sees)")


def load_datasets(args):
    """The test sets (ground truth read, image files checked) and the R1M list, before any model work."""
    datasets = [load_revisitop(args.data_root, name) for name in args.datasets]
    for dataset in datasets:
        dataset.check_images()
    return datasets, load_revisitop(args.data_root, R1M) if args.r1m else None


def load_model(args, env):
    model = prepare_model(load_token(args.checkpoint), env.device)
    dim = model.config["out_dim"]
    if args.pq is not None and dim % args.pq:
        raise InputError(f"--pq {args.pq} must divide the descriptor size {dim}")
    return model, dim


def descriptors(store, model, dim, args, env, dataset, part):
    """Descriptors of the ``part`` ("db" or "query") images of ``dataset`` (rank 0; None elsewhere) and the
    extraction time per image."""
    query = part == "query"
    paths = dataset.query_paths() if query else dataset.db_paths()
    bbxs = dataset.bbxs() if query else None
    key = feature_key(args.checkpoint, args.imsize, args.scales, args.amp, paths, bbxs)

    def compute(start, stop, progress):
        images = RevisitopImages(paths[start:stop], args.imsize, bbxs[start:stop] if query else None)
        return extract(model, images, dim, env.device, args.scales, args.batch_size, args.workers, args.amp,
                       progress)

    name = dataset.name if dataset.name == R1M else f"{dataset.name}_{part}"
    return store.load(name, key, len(paths), dim, compute, args.shard_size, merge=dataset.name != R1M)


def indexes(args, database, device):
    """``(index, qe)`` for every requested search of ``database`` (a list of arrays): exact, exact with
    alpha-QE, with DBA, with both, PQ; without --pq, on the +1M database, also the compressed search
    (``R1M_COMPRESSED``) that benchmarks/search.py picked."""
    exact = ExactIndex(database)
    yield exact, False
    if args.qe:
        yield exact, True
    if args.dba:
        augmented = ExactIndex([dba(exact.all(), args.top_n, args.alpha, device)], label="exact+dba")
        yield augmented, False
        if args.qe:
            yield augmented, True
    if args.pq is not None:
        try:
            quantised = PQIndex(database, args.pq, args.pq_bits, args.ivf, args.nprobe)
        except ValueError as err:
            raise InputError(f"--pq: {err}") from None
        yield quantised, False
    elif args.r1m and len(database) > 1:  # the database plus the distractors
        compressed = CompressedIndex(database, **R1M_COMPRESSED)
        print(f">> compressed search: {compressed.label} ({compressed.bytes_per_image} B/image), the pick of "
              "python -m benchmarks.search for R1M; exact search stays the reference", flush=True)
        yield compressed, False


def search_and_evaluate(index, queries, gnd, qe, args):
    """Revisited mAP / mP@k of the index's ranking and the search time: the top-100 search, plus the first
    search and the expansion with alpha-QE, in ms per query."""
    start = time.perf_counter()
    if qe:
        queries = alpha_qe(queries, index, args.top_n, args.alpha)
    index.search(queries, TOP_K)
    search_ms = 1000 * (time.perf_counter() - start) / max(1, len(queries))
    return revisited_map(index.scores(queries), gnd), search_ms


def summary(results, index, search_ms):
    """One search's entry in results.json: per protocol mAP and mP@k (percent), search time and memory."""
    entry = {p: {"mAP": 100 * results[p]["map"],
                 **{f"mP@{k}": 100 * v for k, v in zip(KAPPAS, results[p]["mp"], strict=True)}}
             for p in PROTOCOLS}
    return {**entry, "search_ms_per_query": search_ms, "bytes_per_image": index.bytes_per_image,
            "database_bytes": index.memory_bytes}


def binary_size(n):
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.2f} MiB"


def evaluate_database(args, env, name, database, queries, gnd):
    """Every requested search of ``database`` (a list of arrays), reported as it is done; their summaries."""
    runs = {}
    for index, qe in indexes(args, database, env.device):
        label = index.label + ("+qe" if qe else "")
        results, search_ms = search_and_evaluate(index, queries, gnd, qe, args)
        print(format_results(name if label == "exact" else f"{name} [{label}]", results))
        print(f">> search {search_ms:.2f} ms/query, database {binary_size(index.memory_bytes)} "
              f"({index.bytes_per_image} B/image)", flush=True)
        runs[label] = summary(results, index, search_ms)
    return runs


def evaluate(args, env, output_dir):
    datasets, distractors = load_datasets(args)
    model, dim = load_model(args, env)
    store = FeatureStore(output_dir / "features", env)
    report = {"checkpoint": str(args.checkpoint), "model_config": model.config, "imsize": args.imsize,
              "scales": args.scales, "amp": args.amp, "device": str(env.device), "processes": env.world_size,
              "datasets": {}}
    if distractors is not None:
        r1m, r1m_ms = descriptors(store, model, dim, args, env, distractors, "db")
    for dataset in datasets:
        queries, query_ms = descriptors(store, model, dim, args, env, dataset, "query")
        db, db_ms = descriptors(store, model, dim, args, env, dataset, "db")
        if not env.is_main:  # the other processes only extract
            continue
        databases = {dataset.name: ([db], {"query": query_ms, "db": db_ms})}
        if distractors is not None:
            databases[f"{dataset.name}+1M"] = ([db, r1m], {"query": query_ms, "db": db_ms, R1M: r1m_ms})
        for name, (database, extraction_ms) in databases.items():
            runs = evaluate_database(args, env, name, database, queries, dataset.gnd)
            report["datasets"][name] = {"images": {"db": sum(map(len, database)), "query": len(queries)},
                                        "extraction_ms_per_image": extraction_ms, "runs": runs}
        if args.output_dir is not None:
            save_json(output_dir / "results.json", report)
    return report


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    env = init_distributed(args.device)
    try:
        check_args(args, env)
        with contextlib.ExitStack() as stack:
            output_dir = Path(args.output_dir or stack.enter_context(tempfile.TemporaryDirectory()))
            return evaluate(args, env, output_dir)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
