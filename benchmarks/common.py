"""What the benchmarks share: thread control, the machine's description, timing, tables and JSON output."""

import ctypes
import glob
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from training.recipes import DEMO, QUICK
from utils.paths import writable_file

OUT_DIR = Path("runs/benchmarks")


def _openblas_setter():
    """numpy's bundled OpenBLAS ``set_num_threads`` (found in the library numpy loaded), or None."""
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*.so*")
    for path in glob.glob(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                return setter
    return None


def set_threads(n):
    """Run torch, faiss and numpy's BLAS on ``n`` threads (numpy: when its OpenBLAS can be reached)."""
    import faiss

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    setter = _openblas_setter()
    if setter is not None:
        setter(ctypes.c_int(n))


def machine():
    """The machine and library versions, for the JSON report (faiss: None where it is not installed, as on the GPU
    machines that run ``benchmarks.gpu_check``)."""
    try:
        import faiss
    except ImportError:
        faiss = None
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "faiss": faiss and faiss.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def median_time(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn()`` (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        result, seconds = timed(fn)
        times.append(seconds)
    return statistics.median(times), result


def default_out(name, quick):
    return OUT_DIR / f"{name}{'-quick' if quick else ''}.json"


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def report_path(args, name):
    """The JSON report's path (``--out``, default under runs/benchmarks), checked writable before any work."""
    return writable_file(args.out or default_out(name, args.quick), "--out")


def write_json(path, report):
    """``report`` as indented JSON at ``path`` (folders created); numpy values become plain numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(report), indent=2) + "\n")
    return path


def table(headers, rows):
    """A Markdown table; floats printed as given (format them first)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def mib(n_bytes):
    return n_bytes / 2 ** 20


DEFAULT_CHECKPOINT = DEMO.checkpoint
DEFAULT_DATA_DIR = DEMO.data_root
FALLBACK_BACKBONE = "resnet18"


def recipe(quick):
    """The demo's recipe the benchmarks measure: ``QUICK`` (demo.py --quick) or ``DEMO``."""
    return QUICK if quick else DEMO


def synthetic_world(data_dir, quick):
    """The demo's synthetic world, generated with the demo's recipe so that the demo's own world is reused
    (never regenerated under it); ``quick``: the demo's ``--quick`` world, under ``data_dir/quick``."""
    from datasets.synthetic import ensure_generated

    root = Path(data_dir) / "quick" if quick else Path(data_dir)
    return ensure_generated(root, seed=recipe(quick).seed, progress=False, **recipe(quick).world)


def benchmark_model(checkpoint, seed=0):
    """``(model in eval mode, info)``: the Token in ``checkpoint``, or, when there is no such file, a freshly
    initialised resnet18 Token of the paper's descriptor size (1024), which ``info["note"]`` says."""
    from networks import Token
    from weights import load_token

    if checkpoint and Path(checkpoint).is_file():
        model = load_token(checkpoint)
        return model, {"checkpoint": str(checkpoint), "fallback": False, "config": model.config.to_dict(),
                       "note": f"model: {checkpoint}"}
    torch.manual_seed(seed)
    model = Token(backbone=FALLBACK_BACKBONE, pretrained=False).eval()
    note = (f"NOTE: checkpoint {checkpoint} not found (python demo.py trains it): using a freshly initialised "
            f"{FALLBACK_BACKBONE} Token (random weights, seed {seed}, {model.config.descriptor_dim}-d descriptors), "
            "not a trained model")
    return model, {"checkpoint": None, "fallback": True, "seed": seed, "config": model.config.to_dict(), "note": note}
