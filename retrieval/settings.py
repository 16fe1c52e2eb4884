"""The settings of test.py and index.py, the command lines that make them and their checks.

``ExtractionSettings``: how descriptors are computed (the checkpoint, the resizing and scales, the batches, loader
processes and device, mixed precision, the whitening, the feature shards), one field per flag of the extraction
group that both scripts add (``add_extraction_arguments``), checked by ``check_extraction``. ``EvalSettings``:
test.py's, the extraction's plus the evaluation's own (data, protocol, search, output), checked by
``check_settings``.

Two protocols: ``token`` (the paper's, the default: database images resized to a longer side of ``--imsize``,
queries cropped to their box first, descriptors averaged over ``--scales``) and ``dir`` (deep-image-retrieval's
published numbers: one scale, every image at its original size, queries cropped to their box).
"""

import argparse
import os
from dataclasses import KW_ONLY, MISSING, dataclass, field, fields, replace

from datasets.revisitop import R1M
from retrieval.descriptor_whitening import DEFAULT_POWER, check_power
from retrieval.extract import SCALES
from retrieval.features import SHARD_SIZE
from retrieval.local_features import LOCAL_SCALES, NUM_FEATURES
from retrieval.search import ALPHA, TOP_N
from utils.checks import EXTRACT_BATCH, IMSIZE, WORKERS, check_flags, int_in
from utils.errors import InputError
from utils.paths import writable_file, writable_folder
from weights import zoo
from weights.zoo import MODELS_DIR, RELEASED

EXTRACTION_PROTOCOLS = ("token", "dir")
LOCAL_METHODS = ("asmk", "vlad")
MAX_SCALE = 4.0  # the largest scale accepted: an image's side times 4 (the protocol's largest is sqrt 2)
# what the whitening flags do, around the whitening they name
EVAL_WHITENING = "also report exact search of descriptors whitened with {}, as a row of its own: exact+whiten"
INDEX_WHITENING = "apply {} before the search"


@dataclass
class ExtractionSettings:
    """How descriptors are computed: one field per flag of the extraction group, of the same name and default."""

    checkpoint: str  # any model file weights.load_model reads, or a released model's name (weights.zoo)
    _: KW_ONLY
    models_dir: str = MODELS_DIR  # where a released name is looked up
    imsize: int = 1024
    scales: list = field(default_factory=lambda: list(SCALES))
    amp: bool = False
    whiten: str | None = None  # a learned whitening of the checkpoint (model.whitening), by name
    whiten_file: str | None = None  # a W.npz (index.py whiten writes one)
    whiten_power: float = DEFAULT_POWER
    batch_size: int = 8
    workers: int = min(8, os.cpu_count() or 1)
    device: str = "auto"  # auto, cpu or cuda
    shard_size: int = SHARD_SIZE
    progress: bool = True  # progress bars of the extraction


@dataclass
class EvalSettings(ExtractionSettings):
    """What to evaluate and how: one field per test.py flag, of the same name and default (the extraction's are
    ``ExtractionSettings``'; ``EvalSettings(checkpoint, data_root)`` with the others by keyword)."""

    data_root: str  # the folder holding test/<dataset>/gnd_<dataset>.pkl and test/<dataset>/jpg/
    datasets: list = field(default_factory=lambda: ["roxford5k", "rparis6k"])
    r1m: bool = False  # also evaluate each dataset with the R1M distractors added to its database
    protocol: str = "token"  # token (multi-scale at imsize) or dir (one scale, original size)
    pq: int | None = None  # PQ sub-quantisers (None: no PQ search)
    pq_bits: int = 8
    ivf: int | None = None  # IVF cells of IVF-PQ (None: flat PQ)
    nprobe: int = 16
    qe: bool = False
    dba: bool = False
    alpha: float = ALPHA
    top_n: int = TOP_N
    output_dir: str | None = None  # None: a temporary folder, deleted at the end, and no results.json
    report: str | None = None  # an HTML page of the evaluation
    local: str | None = None  # "asmk" or "vlad": evaluate the model's local features (HOW) instead
    num_features: int = NUM_FEATURES  # local features per image
    codebook: str | None = None  # a (K, 128) .npy of centroids; None: trained on codebook_images and cached
    codebook_images: str | None = None  # folder or list; None: the first 20,000 GLDv2 training images
    asmk_words: int = 65536
    asmk_binary: bool = True
    ma_db: int = 1
    ma_query: int = 5
    asmk_alpha: float = 3.0
    asmk_tau: float = 0.0
    vlad_words: int = 16


def defaults(settings_class):
    """The default of every field of a settings dataclass, by name (required fields: absent)."""
    return {f.name: f.default if f.default_factory is MISSING else f.default_factory() for f in fields(settings_class)
            if f.default is not MISSING or f.default_factory is not MISSING}


def add_whitening_arguments(parser, use, power=DEFAULT_POWER, learned=True):
    """The whitening flags (``--whiten NAME`` when ``learned``, ``--whiten-file``, ``--whiten-power`` defaulting to
    ``power``); ``use`` says what the whitening does, around ``{}``, the whitening (``EVAL_WHITENING``...)."""
    if learned:
        parser.add_argument("--whiten", metavar="NAME",
                            help=use.format("the checkpoint's learned whitening NAME (deep-image-retrieval files: "
                                            "Landmarks_clean)"))
    parser.add_argument("--whiten-file", metavar="W.npz",
                        help=use.format("this PCA whitening (python index.py whiten learns one)"))
    parser.add_argument("--whiten-power", type=float, default=power, metavar="P",
                        help=f"power of the whitening{' (--whiten or --whiten-file)' if learned else ''}: 0.5 full "
                             "whitening, 0 a plain PCA projection; deep-image-retrieval's published numbers use 0.25"
                             + ("" if power is not None else "; default: the index's"))


def add_extraction_arguments(parser, whitening_use, model=True):
    """The extraction flags of test.py and index.py, the fields of ``ExtractionSettings``, as the group
    "extraction" of ``parser`` (returned); ``whitening_use`` as in ``add_whitening_arguments``. ``model=False``:
    only the flags of how this run extracts (index.py add, whose model, sizes and whitening are the index's)."""
    default = defaults(ExtractionSettings)
    group = parser.add_argument_group("extraction")
    if model:
        group.add_argument("--checkpoint", required=True,
                           help="model file: a released one of the Token repository (Token, R-MAC, SOLAR, DELG, "
                                "NetVLAD), a deep-image-retrieval .pt, or one written by train.py; or a released "
                                f"name, looked up in --models-dir ({', '.join(RELEASED)})")
        group.add_argument("--models-dir", default=default["models_dir"],
                           help="where released names are found (python -m datasets.download models fetches them "
                                "there)")
        group.add_argument("--imsize", type=IMSIZE, default=default["imsize"],
                           help="longer side of the resized database images (queries keep their scale in them)")
        group.add_argument("--scales", type=float, nargs="+", default=default["scales"],
                           help="scales of the multi-scale descriptor (1, sqrt 2, 1/sqrt 2; with test.py "
                                "--local-features, HOW's 7 scales); each in "
                                f"(0, {MAX_SCALE:g}]")
        group.add_argument("--amp", action="store_true",
                           help="float16 autocast on CUDA: faster; descriptors differ from float32 by its rounding")
        add_whitening_arguments(group, whitening_use)
    group.add_argument("--batch-size", type=EXTRACT_BATCH, default=default["batch_size"],
                       help="images of equal size that go through the model together")
    group.add_argument("--workers", type=WORKERS, default=default["workers"],
                       help="image-loading processes per extraction process")
    group.add_argument("--device", default=default["device"], choices=("auto", "cpu", "cuda"),
                       help="auto: CUDA when available (one GPU per torchrun process), else CPU")
    group.add_argument("--shard-size", type=int_in(1, 10**6), default=default["shard_size"],
                       help="images per feature shard: the unit that processes share and an interrupted run resumes "
                            "from")
    group.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bars (for log files); the one-line reports stay")
    return group


def extraction_fields(args):
    """The fields of ``ExtractionSettings`` that the parsed ``args`` hold, by name."""
    return {f.name: getattr(args, f.name) for f in fields(ExtractionSettings) if hasattr(args, f.name)}


def get_args_parser():
    """test.py's command line; ``EvalSettings(**vars(parser.parse_args(argv)))`` gives the settings."""
    default = defaults(EvalSettings)
    parser = argparse.ArgumentParser(description="Evaluate a model (Token or a Table 1 baseline) on revisited "
                                                 "Oxford and Paris, optionally with the "
                                                 "1M distractors: multi-scale descriptors, exact or product-quantised "
                                                 "search, alpha-QE and DBA; mAP and mP@1,5,10 under the Easy, Medium "
                                                 "and Hard protocols.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", required=True,
                      help="folder holding test/<dataset>/gnd_<dataset>.pkl and test/<dataset>/jpg/ "
                           "(python -m datasets.download revisitop builds it)")
    data.add_argument("--datasets", nargs="+", default=default["datasets"],
                      help="test sets under <data-root>/test/; any set in the revisitop format works")
    data.add_argument("--r1m", action="store_true",
                      help="also evaluate each dataset with the 1,001,001 R1M distractors "
                           "(<data-root>/test/revisitop1m/) added to its database; without --pq, that database is "
                           "searched exactly and with the compressed index benchmarks/search.py picked")
    extraction = add_extraction_arguments(parser, EVAL_WHITENING)
    extraction.add_argument("--protocol", default=default["protocol"], choices=EXTRACTION_PROTOCOLS,
                            help="token: the paper's (database resized to --imsize, descriptors averaged over "
                                 "--scales); dir: deep-image-retrieval's (one scale, images at their original size; "
                                 "--imsize and --scales do not apply)")
    search = parser.add_argument_group("search")
    search.add_argument("--pq", type=int_in(1, 2**16), default=default["pq"], metavar="M",
                        help="also search with faiss product quantisation: M sub-quantisers (M bytes per image "
                             "at 8 bits); M must divide the descriptor size")
    search.add_argument("--pq-bits", type=int_in(1, 16), default=default["pq_bits"],
                        help="bits per PQ sub-quantiser code")
    search.add_argument("--ivf", type=int_in(1, 2**20), default=default["ivf"], metavar="NLIST",
                        help="with --pq: IVF-PQ with NLIST coarse cells instead of flat PQ (for R1M, e.g. 1024)")
    search.add_argument("--nprobe", type=int_in(1, 2**20), default=default["nprobe"],
                        help="IVF-PQ: cells visited per query")
    search.add_argument("--qe", action="store_true", help="also report alpha-QE (query expansion) on exact search")
    search.add_argument("--dba", action="store_true",
                        help="also report DBA (database-side augmentation) on exact search; with --qe, DBA + alpha-QE "
                             "too")
    search.add_argument("--alpha", type=float, default=default["alpha"], help="alpha of alpha-QE and DBA")
    search.add_argument("--top-n", type=int_in(1, 10**4), default=default["top_n"],
                        help="neighbours that alpha-QE and DBA add")
    add_local_arguments(parser, default)
    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", default=default["output_dir"],
                        help="keep features/ (reused by a rerun with the same checkpoint and settings, resumed "
                             "after an interruption) and results.json here; required under torchrun; "
                             "default: a temporary folder, deleted at the end")
    output.add_argument("--report", default=default["report"], metavar="FILE.html",
                        help="also write one self-contained HTML page: the mAP table, then every query by its "
                             "Medium AP, worst first, with its top 10 framed by relevance")
    return check_flags(parser)


WORDS = int_in(1, 2 ** 24)  # codebook sizes


def add_local_arguments(parser, default):
    """The flags of the local-feature evaluation (``--local-features``), as the group "local features"."""
    local = parser.add_argument_group("local features", "HOW's local features aggregated with ASMK or VLAD "
                                      "(docs/evaluation.md, \"Local features\")")
    local.add_argument("--local-features", dest="local", choices=LOCAL_METHODS, default=default["local"],
                       help="evaluate the checkpoint's local features (a HOW model) instead of its global "
                            "descriptor: asmk (HOW's inverted file, run \"asmk\") or vlad (one global descriptor "
                            "per image, searched like the others, runs \"vlad...\"); the default --scales become "
                            f"HOW's {' '.join(f'{s:g}' for s in LOCAL_SCALES)}. --local for short, but not under "
                            "torchrun, which refuses it as an abbreviation of its own --local-* flags")
    local.add_argument("--num-features", type=int_in(1, 100_000), default=default["num_features"],
                       help="local features kept per image, the best by attention")
    local.add_argument("--codebook", metavar="FILE.npy", default=default["codebook"],
                       help="the codebook: a float32 (K, 128) array of centroids; default: trained with faiss "
                            "k-means (10 iterations) on --codebook-images and cached in features/")
    local.add_argument("--codebook-images", metavar="FOLDER_OR_LIST", default=default["codebook_images"],
                       help="images whose local features (scale 1 only) train the codebook: a folder (searched "
                            "recursively) or a text file of paths; default: the first 20,000 GLDv2 training images "
                            "under --data-root (Google-landmark-v2/train/), in path order (HOW used SfM-120k)")
    local.add_argument("--asmk-words", type=WORDS, default=default["asmk_words"],
                       help="size of a trained ASMK codebook (a --codebook has its own)")
    local.add_argument("--no-asmk-binary", dest="asmk_binary", action="store_false",
                       help="ASMK with L2-normalised float residuals instead of binary ones (ASMK*)")
    local.add_argument("--ma-db", type=int_in(1, 64), default=default["ma_db"],
                       help="ASMK: words each database feature is assigned to")
    local.add_argument("--ma-query", type=int_in(1, 64), default=default["ma_query"],
                       help="ASMK: words each query feature is assigned to")
    local.add_argument("--asmk-alpha", type=float, default=default["asmk_alpha"],
                       help="ASMK selectivity exponent alpha")
    local.add_argument("--asmk-tau", type=float, default=default["asmk_tau"],
                       help="ASMK similarity threshold tau: word similarities below it count 0")
    local.add_argument("--vlad-words", type=WORDS, default=default["vlad_words"],
                       help="size of a trained VLAD codebook: descriptors of K x 128 dimensions")


def parse_settings(argv=None):
    """``EvalSettings`` from test.py's command line (``sys.argv[1:]`` when ``argv`` is None)."""
    return EvalSettings(**vars(get_args_parser().parse_args(argv)))


def check_extraction(settings, device):
    """Raise ``InputError`` naming the flag for extraction settings that cannot run on ``device``. ``imsize`` None
    (the original size) passes; every scale must be a number in (0, MAX_SCALE] (NaN is not)."""
    s = settings
    if s.whiten is not None and s.whiten_file is not None:
        raise InputError("--whiten NAME and --whiten-file W.npz: pass one whitening")
    check_power(s.whiten_power)
    if s.imsize is not None and s.imsize < 32:
        raise InputError(f"--imsize must be at least 32, got {s.imsize}")
    if not s.scales or not all(0 < scale <= MAX_SCALE for scale in s.scales):
        raise InputError(f"--scales: every value must be a number in (0, {MAX_SCALE:g}], got {s.scales}")
    if s.batch_size < 1 or s.workers < 0 or s.shard_size < 1:
        raise InputError("--batch-size and --shard-size must be positive, --workers at least 0")
    if s.amp and device.type != "cuda":
        raise InputError("--amp runs float16 autocast on CUDA; this run is on the CPU")


def check_settings(settings, env):
    """Raise ``InputError`` (naming the flag) for settings that cannot run in ``env``, and for output paths that
    cannot be written (``--output-dir``, ``--report``), before any work."""
    s = settings
    check_local(s)
    if s.protocol == "dir" and (s.imsize != EvalSettings.imsize or list(s.scales) != list(SCALES)):
        raise InputError("--protocol dir evaluates one scale at the original size: drop --imsize and --scales")
    check_extraction(s, env.device)
    if s.top_n < 1 or s.alpha < 0:
        raise InputError("--top-n must be positive, --alpha at least 0")
    if R1M in s.datasets:
        raise InputError(f"{R1M} has no queries: pass --r1m to add it to the databases of --datasets")
    if s.pq is not None and (s.pq < 1 or not 1 <= s.pq_bits <= 16):
        raise InputError("--pq must be positive and --pq-bits between 1 and 16")
    if s.ivf is not None and (s.pq is None or s.ivf < 1 or not 1 <= s.nprobe <= s.ivf):
        raise InputError("--ivf NLIST needs --pq M, NLIST positive and --nprobe between 1 and NLIST")
    if env.distributed and s.output_dir is None:
        raise InputError("under torchrun, --output-dir is required: the processes exchange features through it "
                         "(a folder every process sees)")
    if s.output_dir is not None:
        writable_folder(s.output_dir, "--output-dir")
    if s.report is not None:
        writable_file(s.report, "--report")


def check_local(settings):
    """Raise ``InputError`` for ``--local-features`` settings that cannot run: the flags that do not apply to it."""
    s = settings
    if s.local is None:
        return
    if s.local not in LOCAL_METHODS:
        raise InputError(f"--local-features must be one of {', '.join(LOCAL_METHODS)}, got {s.local}")
    if s.protocol != "token":
        raise InputError("--local-features runs HOW's protocol (images resized to --imsize, 7 scales): drop "
                         "--protocol")
    if s.whiten is not None or s.whiten_file is not None:
        raise InputError("--local-features: --whiten and --whiten-file apply to the global descriptor, not to local "
                         "features")
    if s.local == "asmk" and (s.pq is not None or s.qe or s.dba):
        raise InputError("--local-features asmk searches its inverted file: --pq, --qe and --dba apply to "
                         "--local-features vlad or to global descriptors only")
    if s.asmk_alpha < 0:
        raise InputError(f"--asmk-alpha must be at least 0, got {s.asmk_alpha}")
    if s.codebook is not None and not os.path.isfile(s.codebook):
        raise InputError(f"--codebook {s.codebook} not found: expected a .npy of (K, 128) float32 centroids")


def with_checkpoint_file(settings):
    """``settings`` with the checkpoint's file: a released name looked up in ``models_dir``."""
    return replace(settings, checkpoint=str(zoo.resolve(settings.checkpoint, settings.models_dir)))


def model_scales(settings, model):
    """``settings`` with the one scale 1 for a model whose descriptor is multi-scale already (``model.multiscale``:
    the aggregator over local features, which takes them at the extractor's 7 scales) when the scales are the
    global default; other scales given by the user are kept."""
    local = getattr(settings, "local", None)  # index.py's settings have no --local-features
    if getattr(model, "multiscale", False) and local is None and list(settings.scales) == list(SCALES):
        return replace(settings, scales=[1.0])
    return settings


def resolve(settings):
    """``settings`` as the evaluation's extraction uses them: the checkpoint's file (``with_checkpoint_file``);
    under the ``dir`` protocol no resizing (``imsize`` None) and the one scale 1; with ``local``, HOW's scales
    when the scales are the global default."""
    settings = with_checkpoint_file(settings)
    if settings.local is not None and list(settings.scales) == list(SCALES):
        return replace(settings, scales=list(LOCAL_SCALES))
    return replace(settings, imsize=None, scales=[1.0]) if settings.protocol == "dir" else settings
