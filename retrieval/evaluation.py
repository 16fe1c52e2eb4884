"""The evaluation of a model (Token or a Table 1 baseline) on revisitop-format test sets, as test.py runs it, for
any caller.

Multi-scale descriptors of every query and database image (``retrieval.extract``), kept in a feature store
(``retrieval.features``); exact, product-quantised or compressed search, alpha-QE and DBA (``retrieval.search``);
mAP and mP@1,5,10 under the Easy, Medium and Hard protocols (``retrieval.revisited``). The protocol is the one
of docs/FACTS.md, "Evaluation protocol": database images resized to a longer side of ``imsize``, queries
cropped to their box first; descriptors averaged over ``scales``; the database ranked by dot product. Under
``protocol="dir"`` (deep-image-retrieval's) every image keeps its original size and one scale is used.

A library caller builds an ``EvalSettings`` (the fields are test.py's flags, ``--pq-bits`` as ``pq_bits``, with
the same defaults) and calls ``evaluate_checkpoint``::

    from retrieval.evaluation import EvalSettings, evaluate_checkpoint

    report = evaluate_checkpoint(EvalSettings(checkpoint="runs/demo/token/last.pth", data_root="data/synthetic",
                                              datasets=["synthetic"], imsize=96, device="cpu",
                                              output_dir="runs/demo/token/eval"))
    report["datasets"]["synthetic"]["runs"]["exact"]["medium"]["mAP"]

With ``local="asmk"`` or ``"vlad"`` (test.py --local-features) the model's local features are evaluated instead
(``retrieval.local_features``, ``retrieval.codebook``): ASMK through its inverted file (run ``asmk``,
``retrieval.asmk``), or VLAD vectors (``retrieval.vlad``) searched as global descriptors (runs ``vlad``,
``vlad+qe``, ``vlad+dba``, PQ...).

The report is the dict that test.py writes to ``results.json``. Bad input raises ``utils.errors.InputError``
(test.py turns it into one line and exit code 2).
"""

import contextlib
import itertools
import math
import tempfile
import time
from pathlib import Path

from datasets.revisitop import R1M, RevisitopImages, gnd_path, load_revisitop
from retrieval import report as html_report
from retrieval.asmk import ASMKParams, ASMKSearch, asmk_package
from retrieval.codebook import codebook, read_codebook
from retrieval.descriptor_whitening import chosen_whitening, whiten_rows
from retrieval.extract import extract_spans, load_for_extraction
from retrieval.features import FeatureStore, feature_key
from retrieval.local_features import LOCAL_DIM, LocalFeatureStore, LocalImages, check_local_model, load_local
from retrieval.revisited import KAPPAS, PROTOCOLS, format_results, revisited_map
from retrieval.search import R1M_COMPRESSED, TOP_K, CompressedSearch, ExactSearch, PQSearch, alpha_qe, dba
from retrieval.settings import EvalSettings, check_settings, get_args_parser, model_scales, parse_settings, resolve
from retrieval.vlad import vlad_rows
from utils.atomic import save_json
from utils.distributed import DistEnv, resolve_device
from utils.errors import InputError

__all__ = ["EvalSettings", "check_settings", "evaluate_checkpoint", "evaluate_model", "get_args_parser",
           "parse_settings"]


@contextlib.contextmanager
def output_folder(output_dir):
    """``output_dir`` as a Path, or, when it is None, a temporary folder removed on exit."""
    with contextlib.ExitStack() as stack:
        yield Path(output_dir or stack.enter_context(tempfile.TemporaryDirectory()))


def check_evaluable(data_root, dataset):
    """Raise ``InputError`` when ``dataset`` leaves nothing to evaluate: no database image, no query, or no query
    with a positive (every mAP would be undefined)."""
    pkl = gnd_path(data_root, dataset.name)
    if not dataset.imlist:
        raise InputError(f"{pkl}: 'imlist' is empty: no database images, nothing to evaluate")
    if not dataset.qimlist:
        raise InputError(f"{pkl}: 'qimlist' is empty: no queries, nothing to evaluate")
    if not any(q["easy"].size or q["hard"].size for q in dataset.gnd):
        raise InputError(f"{pkl}: no query has a positive (every 'easy' and 'hard' is empty): no mAP is defined, "
                         "nothing to evaluate")


def load_test_sets(settings):
    """The test sets (ground truth read and checked, image files checked) and the R1M list (None without
    ``r1m``), before any model work."""
    datasets = [load_revisitop(settings.data_root, name) for name in settings.datasets]
    for dataset in datasets:
        check_evaluable(settings.data_root, dataset)
        dataset.check_images()
    distractors = load_revisitop(settings.data_root, R1M) if settings.r1m else None
    if distractors is not None and not distractors.imlist:
        raise InputError(f"{distractors.root / (R1M + '.txt')}: lists no image: no distractors to add")
    return datasets, distractors


def check_model(settings, model):
    """Raise ``InputError`` for settings that the model cannot run: ``--local-features`` needs local features, ``--pq``
    must divide the descriptor size (VLAD's: K x 128, K of a given codebook when there is one)."""
    dim = model.config.descriptor_dim
    if settings.local is not None:
        check_local_model(model)
        if settings.local == "asmk":
            asmk_package()  # one line saying how to install it, before any extraction
        words = len(read_codebook(settings.codebook)) if settings.codebook else settings.vlad_words
        dim = words * LOCAL_DIM
    if settings.pq is not None and dim % settings.pq:
        raise InputError(f"--pq {settings.pq} must divide the descriptor size {dim}")


def descriptors(store, model, settings, env, dataset, part):
    """Descriptors of the ``part`` ("db" or "query") images of ``dataset`` (rank 0; None elsewhere) and the
    extraction time per image. With ``settings.local``, ``store`` holds local features (float16) and the
    descriptors are a list of per-image (n, 128) local-feature arrays."""
    query = part == "query"
    paths = dataset.query_paths() if query else dataset.db_paths()
    bbxs = dataset.bbxs() if query else None
    key = feature_key(settings.checkpoint, settings.imsize, settings.scales, settings.amp, paths, bbxs)
    dim = model.config.descriptor_dim
    if settings.local is not None:
        name = f"{dataset.name if dataset.name == R1M else f'{dataset.name}_{part}'}_local"
        rows, ms = load_local(store, model, name, key, RevisitopImages(paths, settings.imsize, bbxs), settings, env,
                              settings.scales, merge=dataset.name != R1M)
        return (None if rows is None else LocalImages(rows)), ms

    def compute(spans, progress):
        return extract_spans(model, RevisitopImages(paths, settings.imsize, bbxs), spans, dim, env.device,
                             settings.scales, settings.batch_size, settings.workers, settings.amp, progress)

    name = dataset.name if dataset.name == R1M else f"{dataset.name}_{part}"
    return store.load(name, key, len(paths), dim, compute, settings.shard_size, merge=dataset.name != R1M)


def indexes(settings, database, device, label="exact"):
    """``(index, qe)`` for every requested search of ``database`` (a list of arrays): exact, exact with
    alpha-QE, with DBA, with both, PQ; without ``pq``, on the +1M database, also the compressed search
    (``R1M_COMPRESSED``) that benchmarks/search.py picked. ``label``: the exact search's name ("vlad" for VLAD
    vectors), which the DBA search's extends."""
    exact = ExactSearch(database, label=label)
    yield exact, False
    if settings.qe:
        yield exact, True
    if settings.dba:
        augmented = ExactSearch([dba(exact.all(), settings.top_n, settings.alpha, device)], label=f"{label}+dba")
        yield augmented, False
        if settings.qe:
            yield augmented, True
    if settings.pq is not None:
        try:
            quantised = PQSearch(database, settings.pq, settings.pq_bits, settings.ivf, settings.nprobe)
        except ValueError as err:
            raise InputError(f"--pq: {err}") from None
        yield quantised, False
    elif settings.r1m and len(database) > 1:  # the database plus the distractors
        compressed = CompressedSearch(database, **R1M_COMPRESSED)
        print(f">> compressed search: {compressed.label} ({compressed.bytes_per_image} B/image), the pick of "
              "python -m benchmarks.search for R1M; exact search stays the reference", flush=True)
        yield compressed, False


def search_and_measure(index, queries, gnd, qe, settings):
    """Revisited mAP / mP@k of the index's ranking and the search time: the top-100 search, plus the first
    search and the expansion with alpha-QE, in ms per query."""
    start = time.perf_counter()
    if qe:
        queries = alpha_qe(queries, index, settings.top_n, settings.alpha)
    index.search(queries, TOP_K)
    search_ms = 1000 * (time.perf_counter() - start) / max(1, len(queries))
    return revisited_map(index.scores(queries), gnd), search_ms


def percent(value):
    """A mean in percent for results.json; None (JSON null) where it is undefined (NaN: no query with positives)."""
    return None if math.isnan(value) else 100 * float(value)


def summary(results, index, search_ms):
    """One search's entry in results.json: per protocol mAP and mP@k (percent, None where undefined), search time
    and memory."""
    entry = {p: {"mAP": percent(results[p]["map"]),
                 **{f"mP@{k}": percent(v) for k, v in zip(KAPPAS, results[p]["mp"], strict=True)}}
             for p in PROTOCOLS}
    return {**entry, "search_ms_per_query": search_ms, "bytes_per_image": index.bytes_per_image,
            "database_bytes": index.memory_bytes}


def binary_size(n):
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.2f} MiB"


def evaluate_database(settings, env, name, database, queries, gnd, whitening=None, label="exact"):
    """Every requested search of ``database`` (a list of arrays), reported as it is done; their summaries.
    With ``whitening``, exact search of the whitened database and queries too (``exact+whiten``). ``label``: as
    in ``indexes``."""
    searches = ((index, qe, queries) for index, qe in indexes(settings, database, env.device, label))
    if whitening is not None:
        whitened = ExactSearch([whiten_rows(whitening, part, settings.whiten_power) for part in database],
                              label="exact+whiten")
        whitened_queries = whiten_rows(whitening, queries, settings.whiten_power)
        searches = itertools.chain(searches, [(whitened, False, whitened_queries)])
    runs = {}
    for index, qe, index_queries in searches:
        label = index.label + ("+qe" if qe else "")
        label, runs[label] = measured_run(settings, name, index, index_queries, gnd, qe)
    return runs


def measured_run(settings, name, index, queries, gnd, qe=False):
    """One search of ``index`` measured, printed and summarised: its label (the index's, "+qe" with ``qe``) and
    ``summary``. The name printed is the database's, followed by the label unless it is plain exact search."""
    label = index.label + ("+qe" if qe else "")
    results, search_ms = search_and_measure(index, queries, gnd, qe, settings)
    print(format_results(name if label == "exact" else f"{name} [{label}]", results))
    print(f">> search {search_ms:.2f} ms/query, database {binary_size(index.memory_bytes)} "
          f"({index.bytes_per_image} B/image)", flush=True)
    return label, summary(results, index, search_ms)


def evaluate_local(settings, env, name, database, queries, gnd, centroids):
    """The runs of local features ``database`` (a list of parts, each a list of per-image arrays) and
    ``queries`` over the codebook ``centroids``: ASMK (run "asmk") or VLAD (``evaluate_database`` of the VLAD
    vectors, runs "vlad..."); and the scores of the main run, for the report."""
    if settings.local == "vlad":
        vectors = [vlad_rows(part, centroids) for part in database]
        query_vectors = vlad_rows(queries, centroids)
        runs = evaluate_database(settings, env, name, vectors, query_vectors, gnd, label="vlad")
        return runs, ExactSearch(vectors).scores(query_vectors)
    params = ASMKParams(settings.asmk_binary, settings.ma_db, settings.ma_query, settings.asmk_alpha,
                        settings.asmk_tau, settings.asmk_words)
    index = ASMKSearch(centroids, database, params)
    label, run = measured_run(settings, name, index, queries, gnd)
    return {label: run}, index.scores(queries)


def evaluate_model(settings, env, model, test_sets, distractors, output_dir):
    """Extract, search and report, test set after test set: the report (``results.json``'s content, written
    to ``output_dir`` after each test set when ``settings.output_dir`` is set). Features are kept under
    ``output_dir/features``. Under torchrun every rank extracts its share; rank 0 alone searches and reports
    (the other ranks return a report without datasets)."""
    local = settings.local
    whitening = None if local else chosen_whitening(model, settings.whiten, settings.whiten_file)
    store = (LocalFeatureStore if local else FeatureStore)(output_dir / "features", env, settings.progress)
    sections = []
    report = {"model": model.config.model, "checkpoint": str(settings.checkpoint),
              "model_config": model.config.to_dict(), "protocol": settings.protocol, "imsize": settings.imsize,
              "scales": settings.scales, "amp": settings.amp, "device": str(env.device),
              "processes": env.world_size, "datasets": {}}
    if local:
        words = settings.asmk_words if local == "asmk" else settings.vlad_words
        centroids = codebook(local, words, store, model, settings, env)
        report["local"] = {"method": local, "num_features": settings.num_features,
                           "codebook": settings.codebook or "trained", "words": None if centroids is None
                           else len(centroids)}
    if env.is_main:
        what = (f"local features, {local}" if local else
                f"{model.config.backbone}, {model.config.descriptor_dim}-d")
        print(f">> {model.__class__.__name__} ({what}) from {settings.checkpoint}, {settings.protocol} protocol",
              flush=True)
    if distractors is not None:
        r1m, r1m_ms = descriptors(store, model, settings, env, distractors, "db")
    for dataset in test_sets:
        queries, query_ms = descriptors(store, model, settings, env, dataset, "query")
        db, db_ms = descriptors(store, model, settings, env, dataset, "db")
        if not env.is_main:  # the other processes only extract
            continue
        databases = {dataset.name: ([db], {"query": query_ms, "db": db_ms})}
        if distractors is not None:
            databases[f"{dataset.name}+1M"] = ([db, r1m], {"query": query_ms, "db": db_ms, R1M: r1m_ms})
        for name, (database, extraction_ms) in databases.items():
            if local:
                runs, scores = evaluate_local(settings, env, name, database, queries, dataset.gnd, centroids)
            else:
                runs = evaluate_database(settings, env, name, database, queries, dataset.gnd, whitening)
                scores = ExactSearch(database).scores(queries) if settings.report is not None else None
            report["datasets"][name] = {"images": {"db": sum(map(len, database)), "query": len(queries)},
                                        "extraction_ms_per_image": extraction_ms, "runs": runs}
            if settings.report is not None:
                db_paths = dataset.db_paths() + (distractors.db_paths() if len(database) > 1 else [])
                sections.append(html_report.query_section(name, dataset, db_paths, scores, local or "exact"))
        if settings.output_dir is not None:
            save_json(output_dir / "results.json", report)
        if settings.report is not None:
            print(f"wrote {html_report.write_report(settings.report, report, sections)}", flush=True)
    return report


def evaluate_checkpoint(settings, env=None):
    """Evaluate ``settings.checkpoint`` on ``settings.datasets`` as test.py does; the report test.py writes to
    ``results.json`` (written there too when ``settings.output_dir`` is set).

    ``env``: the process's ``utils.distributed.DistEnv``; None (a library caller) runs one process on
    ``settings.device``. Raises ``InputError`` for bad settings or input, before any extraction.
    """
    env = env or DistEnv(0, 1, resolve_device(settings.device))
    check_settings(settings, env)
    with output_folder(settings.output_dir) as output_dir:
        test_sets, distractors = load_test_sets(settings)
        settings = resolve(settings)  # the checkpoint's file, once the data is known to be there
        model = load_for_extraction(settings.checkpoint, env.device)
        settings = model_scales(settings, model)
        check_model(settings, model)
        return evaluate_model(settings, env, model, test_sets, distractors, output_dir)
