"""test.py's settings: ``EvalSettings`` (one field per flag), the command line that makes them, and their checks.

Two protocols: ``token`` (the paper's, the default: database images resized to a longer side of ``--imsize``,
queries cropped to their box first, descriptors averaged over ``--scales``) and ``dir`` (deep-image-retrieval's
published numbers: one scale, every image at its original size, queries cropped to their box).
"""

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields, replace

from datasets.revisitop import R1M
from networks import zoo
from networks.zoo import MODELS_DIR, RELEASED
from retrieval.extract import MAX_SCALE, SCALES, check_extraction
from retrieval.features import SHARD_SIZE
from retrieval.search import ALPHA, TOP_N
from retrieval.whitening_files import DEFAULT_POWER
from utils.checks import finite_float_flags
from utils.errors import InputError
from utils.paths import writable_folder

EXTRACTION_PROTOCOLS = ("token", "dir")


@dataclass
class EvalSettings:
    """What to evaluate and how: one field per test.py flag, of the same name and default."""

    checkpoint: str  # any model file networks.load_model reads, or a released model's name (networks.zoo)
    data_root: str  # the folder holding test/<dataset>/gnd_<dataset>.pkl and test/<dataset>/jpg/
    models_dir: str = MODELS_DIR  # where a released name is looked up
    datasets: list = field(default_factory=lambda: ["roxford5k", "rparis6k"])
    r1m: bool = False  # also evaluate each dataset with the R1M distractors added to its database
    protocol: str = "token"  # token (multi-scale at imsize) or dir (one scale, original size)
    imsize: int = 1024
    scales: list = field(default_factory=lambda: list(SCALES))
    batch_size: int = 8
    workers: int = min(8, os.cpu_count() or 1)
    device: str = "auto"  # auto, cpu or cuda
    amp: bool = False
    pq: int | None = None  # PQ sub-quantisers (None: no PQ search)
    pq_bits: int = 8
    ivf: int | None = None  # IVF cells of IVF-PQ (None: flat PQ)
    nprobe: int = 16
    qe: bool = False
    dba: bool = False
    alpha: float = ALPHA
    top_n: int = TOP_N
    whiten: str | None = None  # a learned whitening of the checkpoint (model.whitening): also report it
    whiten_file: str | None = None  # a W.npz: also report exact search of whitened descriptors
    whiten_power: float = DEFAULT_POWER
    output_dir: str | None = None  # None: a temporary folder, deleted at the end, and no results.json
    shard_size: int = SHARD_SIZE
    progress: bool = True  # progress bars of the extraction
    report: str | None = None  # an HTML page of the evaluation


def get_args_parser():
    """test.py's command line; ``EvalSettings(**vars(parser.parse_args(argv)))`` gives the settings."""
    default = {f.name: f.default if f.default_factory is MISSING else f.default_factory()
               for f in fields(EvalSettings)}
    parser = argparse.ArgumentParser(description="Evaluate a model (Token or a Table 1 baseline) on revisited "
                                                 "Oxford and Paris, optionally with the "
                                                 "1M distractors: multi-scale descriptors, exact or product-quantised "
                                                 "search, alpha-QE and DBA; mAP and mP@1,5,10 under the Easy, Medium "
                                                 "and Hard protocols.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data and model")
    data.add_argument("--checkpoint", required=True,
                      help="model file: a released one of the Token repository (Token, R-MAC, SOLAR, DELG, NetVLAD), "
                           "a deep-image-retrieval .pt, or one written by train.py; or a released name, looked up "
                           f"in --models-dir ({', '.join(RELEASED)})")
    data.add_argument("--models-dir", default=default["models_dir"],
                      help="where released names are found (python -m datasets.download models fetches them there)")
    data.add_argument("--data-root", required=True,
                      help="folder holding test/<dataset>/gnd_<dataset>.pkl and test/<dataset>/jpg/ "
                           "(python -m datasets.download revisitop builds it)")
    data.add_argument("--datasets", nargs="+", default=default["datasets"],
                      help="test sets under <data-root>/test/; any set in the revisitop format works")
    data.add_argument("--r1m", action="store_true",
                      help="also evaluate each dataset with the 1,001,001 R1M distractors "
                           "(<data-root>/test/revisitop1m/) added to its database; without --pq, that database is "
                           "searched exactly and with the compressed index benchmarks/search.py picked")
    extraction = parser.add_argument_group("extraction")
    extraction.add_argument("--protocol", default=default["protocol"], choices=EXTRACTION_PROTOCOLS,
                            help="token: the paper's (database resized to --imsize, descriptors averaged over "
                                 "--scales); dir: deep-image-retrieval's (one scale, images at their original size; "
                                 "--imsize and --scales do not apply)")
    extraction.add_argument("--imsize", type=int, default=default["imsize"],
                            help="longer side of the resized database images (queries keep their scale in them)")
    extraction.add_argument("--scales", type=float, nargs="+", default=default["scales"],
                            help="scales of the multi-scale descriptor (1, sqrt 2, 1/sqrt 2); each in "
                                 f"(0, {MAX_SCALE:g}]")
    extraction.add_argument("--batch-size", type=int, default=default["batch_size"],
                            help="images of equal size that go through the model together")
    extraction.add_argument("--workers", type=int, default=default["workers"],
                            help="image-loading processes per extraction process")
    extraction.add_argument("--device", default=default["device"], choices=("auto", "cpu", "cuda"),
                            help="auto: CUDA when available (one GPU per torchrun process), else CPU")
    extraction.add_argument("--amp", action="store_true",
                            help="float16 autocast on CUDA: faster; descriptors differ from float32 by its rounding")
    search = parser.add_argument_group("search")
    search.add_argument("--pq", type=int, default=default["pq"], metavar="M",
                        help="also search with faiss product quantisation: M sub-quantisers (M bytes per image "
                             "at 8 bits); M must divide the descriptor size")
    search.add_argument("--pq-bits", type=int, default=default["pq_bits"], help="bits per PQ sub-quantiser code")
    search.add_argument("--ivf", type=int, default=default["ivf"], metavar="NLIST",
                        help="with --pq: IVF-PQ with NLIST coarse cells instead of flat PQ (for R1M, e.g. 1024)")
    search.add_argument("--nprobe", type=int, default=default["nprobe"], help="IVF-PQ: cells visited per query")
    search.add_argument("--qe", action="store_true", help="also report alpha-QE (query expansion) on exact search")
    search.add_argument("--dba", action="store_true",
                        help="also report DBA (database-side augmentation) on exact search; with --qe, DBA + alpha-QE "
                             "too")
    search.add_argument("--alpha", type=float, default=default["alpha"], help="alpha of alpha-QE and DBA")
    search.add_argument("--top-n", type=int, default=default["top_n"], help="neighbours that alpha-QE and DBA add")
    search.add_argument("--whiten", default=default["whiten"], metavar="NAME",
                        help="also report exact search of descriptors whitened with the checkpoint's learned whitening "
                             "NAME (deep-image-retrieval files: Landmarks_clean), as a row of its own: exact+whiten")
    search.add_argument("--whiten-file", default=default["whiten_file"], metavar="W.npz",
                        help="also report exact search of descriptors whitened with this PCA whitening (python "
                             "index.py whiten learns one), as a row of its own: exact+whiten")
    search.add_argument("--whiten-power", type=float, default=default["whiten_power"], metavar="P",
                        help="power of the whitening (--whiten or --whiten-file): 0.5 full whitening, 0 a plain "
                             "PCA projection; deep-image-retrieval's published numbers use 0.25")
    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", default=default["output_dir"],
                        help="keep features/ (reused by a rerun with the same checkpoint and settings, resumed "
                             "after an interruption) and results.json here; required under torchrun; "
                             "default: a temporary folder, deleted at the end")
    output.add_argument("--shard-size", type=int, default=default["shard_size"],
                        help="images per feature shard: the unit that processes share and an interrupted run "
                             "resumes from")
    output.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars (for log files); the one-line reports stay")
    output.add_argument("--report", default=default["report"], metavar="FILE.html",
                        help="also write one self-contained HTML page: the mAP table, then every query by its "
                             "Medium AP, worst first, with its top 10 framed by relevance")
    return finite_float_flags(parser)


def parse_settings(argv=None):
    """``EvalSettings`` from test.py's command line (``sys.argv[1:]`` when ``argv`` is None)."""
    return EvalSettings(**vars(get_args_parser().parse_args(argv)))


def check_settings(settings, env):
    """Raise ``InputError`` (naming the flag) for settings that cannot run in ``env``, before any work."""
    s = settings
    if s.protocol == "dir" and (s.imsize != EvalSettings.imsize or list(s.scales) != list(SCALES)):
        raise InputError("--protocol dir evaluates one scale at the original size: drop --imsize and --scales")
    if s.whiten is not None and s.whiten_file is not None:
        raise InputError("--whiten NAME and --whiten-file W.npz: pass one whitening")
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


def resolve(settings):
    """``settings`` as the extraction uses them: the checkpoint's file (a released name looked up in
    ``models_dir``); under the ``dir`` protocol no resizing (``imsize`` None) and the one scale 1."""
    checkpoint = str(zoo.resolve(settings.checkpoint, settings.models_dir))
    if settings.protocol == "dir":
        return replace(settings, checkpoint=checkpoint, imsize=None, scales=[1.0])
    return replace(settings, checkpoint=checkpoint)
