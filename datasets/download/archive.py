"""The one extraction routine of the downloaders: the files of a ``.tar`` / ``.tar.gz`` into an image folder.

Each file is written under ``<name>.<thread id>.tmp`` and renamed, so a present file is a complete one. A gzip stream is
read to its end, which checks its CRC. What can go wrong, and what is left:

- a corrupt archive (truncated, bad CRC): the files it gave and the archive are deleted, so that a rerun
  downloads and extracts it again;
- a full disk or an unwritable folder: the ``.tmp`` file is deleted; the complete files and the archive are
  kept, so a rerun after freeing space extracts again without downloading;
- a member outside the folder (absolute, ``..``) or larger than ``MAX_MEMBER_BYTES``: refused before a byte
  of it is written.
"""

import gzip
import shutil
import tarfile
import threading
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from datasets.download.fetch import CHUNK, DownloadError
from utils.paths import relative_inside

MAX_MEMBER_BYTES = 100 * 2**20  # 100 MiB: a bound far above any photo of these datasets, below a disk-filling member
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def member_target(images_dir, name, flatten):
    """Where an archive member goes: ``<images_dir>/<basename>`` for jpgs when flattening, else its relative
    path under ``images_dir``; None for a member that is skipped."""
    if flatten:
        path = PurePosixPath(name)
        return images_dir / path.name if path.suffix.lower() == ".jpg" else None
    try:
        path = relative_inside(name)  # the one rule for names inside a data root
        if not path.parts:
            raise ValueError("no file name")
    except ValueError as err:
        raise DownloadError(f"archive member {name!r} is not a relative path inside {images_dir} ({err}): "
                            "refused") from None
    return images_dir.joinpath(*path.parts)


def _open_stream(archive):
    return gzip.open(archive, "rb") if archive.suffix in (".gz", ".tgz") else open(archive, "rb")


def _remove(*paths):
    """Delete each path that exists (a path listed twice, or already gone, is fine)."""
    for path in paths:
        if path is not None:
            Path(path).unlink(missing_ok=True)


def extract_archive(archive, images_dir, flatten, progress=True):
    """Write the files of ``archive`` (``.tar``, ``.tar.gz``, ``.tgz``) under ``images_dir``; returns how many.

    ``flatten``: every jpg goes to ``images_dir/<basename>`` (ROxf/RPar); else members keep their relative
    paths (R1M, GLDv2). ``progress``: show a bar of extracted files. See the module docstring for failures.
    """
    archive, images_dir = Path(archive), Path(images_dir)
    written, tmp = {}, None  # written: a dict, so a name given twice by the archive is deleted once
    try:
        with _open_stream(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tar, \
                tqdm(unit=" files", desc=f"extract {archive.name}", disable=not progress) as bar:
            for member in tar:
                target = member_target(images_dir, member.name, flatten) if member.isfile() else None
                if target is None:
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise DownloadError(f"{archive}: member {member.name!r} is {member.size} bytes, above the "
                                        f"{MAX_MEMBER_BYTES} bytes allowed for one image (MAX_MEMBER_BYTES): "
                                        "refused; this is not the published archive, delete it and rerun")
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f"{target.name}.{threading.get_native_id()}.tmp")  # one per thread
                with tar.extractfile(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                tmp.replace(target)
                tmp = None
                written[target] = None
                bar.update()
            while stream.read(CHUNK):
                pass
    except _CORRUPT as err:
        _remove(tmp, *written, archive)
        raise DownloadError(f"{archive}: corrupt archive ({err.__class__.__name__}: {err}); deleted it and "
                            "its files, rerun to download it again") from None
    except OSError as err:
        failed = tmp or err.filename or images_dir
        _remove(tmp)
        raise DownloadError(f"cannot write {failed} ({err.strerror or err}): free space or fix the folder and "
                            f"rerun; {len(written)} complete files and {archive.name} are kept, nothing "
                            "half-written is left") from None
    except DownloadError:
        _remove(tmp)
        raise
    return len(written)
