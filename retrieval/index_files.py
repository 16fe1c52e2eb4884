"""The files of an index folder, read only as index.json says they are.

index.json, written last by every build or add, lists each file the index reads (``paths.txt``,
``descriptors.npy``, ``search.faiss``, ``skipped.txt``, ``whitening.npz`` and the files of its parts under
``features/``) with its size and SHA-256: a file is read only when it is the one index.json lists. So a reader never
pairs the paths of one run with the rows or the search structure of another (a build or add killed, or out of
disk, between two of its files; a file replaced or edited by hand), and refuses a damaged or foreign file in one
line before anything parses it. What is read is then checked against what index.json says it holds (rows, size,
type), so that an index.json edited to match a crafted file is refused as well, never a traceback.
"""

import hashlib
from pathlib import Path

import faiss
import numpy as np

from utils.errors import InputError

INDEX_FILE = "index.json"
CHUNK = 1 << 20


def file_entry(path):
    """``{"bytes", "sha256"}`` of the file at ``path``: what index.json lists for it."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def checked(index_dir, files, name):
    """The path of the file ``name`` (relative to ``index_dir``), which must be the one ``files`` (index.json's
    ``"files"``) lists; ``InputError`` naming it otherwise."""
    path = Path(index_dir) / name
    entry = files.get(name)
    if entry is None:
        problem = f"index.json lists no file {name}"
    elif not path.is_file():
        problem = f"{name} is missing"
    elif not isinstance(entry, dict) or path.stat().st_size != entry.get("bytes") or file_entry(path) != entry:
        problem = f"{name} is not the file index.json lists (another size or SHA-256)"
    else:
        return path
    raise InputError(f"--index {index_dir}: {problem}: a build or add was interrupted or is running, or the file was "
                     "replaced or edited; run build again")


def _bad(path, what):
    return InputError(f"{path}: {what}; run build again")


def read_lines(path):
    """The lines of a file of one path a line (UTF-8), empty lines left out."""
    try:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
    except UnicodeDecodeError:
        raise _bad(path, "not UTF-8 text") from None


def read_rows(path, count, dim, finite=True):
    """The float32 (``count`` x ``dim``) array of the ``.npy`` at ``path`` (never a pickle); ``finite``: every
    value finite (a part's rows may be NaN: its unreadable files)."""
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise _bad(path, f"not a readable .npy of descriptors ({err})") from None
    if rows.dtype != np.float32 or rows.shape != (count, dim):
        raise _bad(path, f"holds {rows.dtype} {rows.shape}, the index float32 ({count}, {dim})")
    if finite and not np.isfinite(rows).all():
        raise _bad(path, f"row {int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])} is not finite")
    return rows


def read_structure(path, count, dim):
    """The faiss index serialised at ``path``, which must search ``count`` vectors of size ``dim``."""
    try:
        structure = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except RuntimeError:  # faiss's reader: truncated, garbage, an unknown index type
        raise _bad(path, "not a readable faiss index") from None
    if (structure.ntotal, structure.d) != (count, dim):
        raise _bad(path, f"searches {structure.ntotal} vectors of size {structure.d}, the index {count} of size {dim}")
    return structure
