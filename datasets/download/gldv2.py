"""The GLDv2 train set from the CVDF mirror into the layout ``datasets/gldv2.py`` reads.

Under ``<base-url>`` (CVDF's README): ``metadata/train.csv``, ``metadata/train_clean.csv``, the 500 parts
``train/images_000.tar`` .. ``train/images_499.tar`` (about 1 GB each) and their checksums
``md5sum/train/md5.images_000.txt`` .. (one ``md5sum`` line: ``<hex digest>  images_000.tar``). The members
of a part are already laid out as ``a/b/c/<id>.jpg``, the first three characters of the id.

The CSVs go to ``DATA_ROOT/Google-landmark-v2/``; parts and checksums are downloaded, resumable, to its
``download/`` folder, several at a time (``--jobs``). A part is md5-checked (a mismatching one is downloaded
once more, then reported), extracted into ``train/`` with temporary names and renames, marked
``download/images_NNN.tar.done`` and deleted. Ctrl-C stops every running download at its next chunk, keeping
its ``.part``. A rerun skips the parts marked done and resumes the others. At the end the images of
train_clean.csv still missing are counted and the first few named.
"""

import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from datasets.download.archive import extract_archive
from datasets.download.fetch import MAX_ARCHIVE_BYTES, MAX_CSV_BYTES, MAX_LIST_BYTES, DownloadError, fetch, file_digest
from datasets.gldv2 import GLDV2_DIR, IMAGES_DIR, TRAIN_CLEAN_CSV, TRAIN_CSV, find_missing, image_path, read_annotations
from utils.errors import InputError

GLDV2_URL = "https://s3.amazonaws.com/google-landmark"
PARTS = 500
WORK_DIR = "download"  # under the GLDv2 folder: parts being downloaded, their checksums and .done markers
_MD5_LINE = re.compile(r"([0-9a-fA-F]{32})\s+\*?(\S+)")


def parse_parts(text, n_parts=PARTS):
    """The sorted part numbers of ``text``: ranges and lists such as ``0-1`` or ``3,7,10-12``."""
    expected = f"part numbers 0-{n_parts - 1} as ranges and lists, e.g. 0-1 or 3,7,10-12"
    parts = set()
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not match:
            raise InputError(f"--parts {text!r}: {item!r} is not a number or a range: expected {expected}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if not first <= last < n_parts:
            raise InputError(f"--parts {text!r}: {item.strip()} is not within 0-{n_parts - 1}: expected {expected}")
        parts.update(range(first, last + 1))
    return sorted(parts)


def part_name(i):
    return f"images_{i:03d}.tar"


def read_md5(md5_file, name):
    """The md5 digest that the ``md5sum`` list ``md5_file`` gives for ``name``."""
    for line in md5_file.read_text(errors="replace").splitlines():
        match = _MD5_LINE.fullmatch(line.strip())
        if match and Path(match.group(2)).name == name:
            return match.group(1).lower()
    md5_file.unlink()
    raise DownloadError(f"{md5_file}: no md5sum line '<32 hex digits>  {name}'; deleted it, rerun to fetch it again")


class _SharedBar:
    """A byte bar advanced from several download threads; once ``stop`` is set, each download ends at its next
    chunk (its ``.part`` kept for the rerun)."""

    def __init__(self, bar):
        self.bar, self.lock, self.stop = bar, threading.Lock(), threading.Event()

    def update(self, n):
        if self.stop.is_set():
            raise DownloadError("stopped by Ctrl-C")
        with self.lock:
            self.bar.update(n)


def download_part(i, gldv2_dir, base_url, bar):
    """Fetch, md5-check, extract and delete part ``i``, then mark it done; returns how many images it held."""
    work, name = gldv2_dir / WORK_DIR, part_name(i)
    md5_name = f"md5.{Path(name).stem}.txt"
    fetch(f"{base_url}/md5sum/train/{md5_name}", work / md5_name, MAX_LIST_BYTES, bar=bar)
    expected = read_md5(work / md5_name, name)
    tar, url = work / name, f"{base_url}/train/{name}"
    for attempt in range(2):
        fetch(url, tar, MAX_ARCHIVE_BYTES, bar=bar)
        got = file_digest(tar, "md5")
        if got == expected:
            break
        tar.unlink()
        if attempt:
            raise DownloadError(f"{url}: md5 {got} differs again from the {expected} of {md5_name}; deleted it: the "
                                "mirror or the network corrupts it, rerun later")
        tqdm.write(f">> {name}: md5 {got} is not the {expected} of {md5_name}: downloading it again")
    count = extract_archive(tar, gldv2_dir / IMAGES_DIR, flatten=False, progress=False)
    (work / f"{name}.done").write_text(f"{count} images\n")
    tar.unlink()
    (work / md5_name).unlink()
    return count


def _run_parts(todo, gldv2_dir, base_url, jobs, n_asked):
    """Download the parts of ``todo`` in ``jobs`` threads; the first failure is raised once the others stop, and
    Ctrl-C (``KeyboardInterrupt``: exit 130, ``error: interrupted``) once they have stopped at their next chunk."""
    errors, interrupted = [], False
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="GLDv2 bytes") as bytes_bar, \
            tqdm(total=n_asked, initial=n_asked - len(todo), unit=" parts", desc="GLDv2 parts") as parts_bar, \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        bar = _SharedBar(bytes_bar)
        futures = [pool.submit(download_part, i, gldv2_dir, base_url, bar) for i in todo]
        try:
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    future.result()
                    parts_bar.update()
                except DownloadError as err:
                    errors.append(err)
                    for pending in futures:
                        pending.cancel()
        except KeyboardInterrupt:  # the running downloads stop at their next chunk, so the exit comes at once
            bar.stop.set()
            for pending in futures:
                pending.cancel()
            interrupted = True
    if interrupted:  # the .part files and the finished parts are kept: a rerun resumes
        raise KeyboardInterrupt
    if errors:
        more = f" ({len(errors) - 1} more parts failed)" if len(errors) > 1 else ""
        raise DownloadError(f"{errors[0]}{more}; finished parts are kept, rerun to continue")


def report_missing(gldv2_dir, n_parts_done):
    """Print how many images of train_clean.csv are on disk, naming the first few missing."""
    ids = read_annotations(gldv2_dir / TRAIN_CLEAN_CSV)["id"]
    missing = find_missing(gldv2_dir, ids)
    line = f">> GLDv2: {len(ids) - len(missing)} of the {len(ids)} images of {TRAIN_CLEAN_CSV} in {gldv2_dir}"
    if missing:
        examples = ", ".join(image_path(i) for i in missing[:3])
        line += f"; {len(missing)} missing, e.g. {examples}"
        if n_parts_done < PARTS:
            line += f" ({n_parts_done} of the {PARTS} parts are done)"
    print(line)
    return missing


def download_gldv2(data_root, parts, jobs=4, base_url=GLDV2_URL):
    """The CSVs, then every part of ``parts`` not yet done; returns the train_clean.csv ids still missing."""
    gldv2_dir = Path(data_root) / GLDV2_DIR
    (gldv2_dir / WORK_DIR).mkdir(parents=True, exist_ok=True)
    base_url = base_url.rstrip("/")
    for csv in (TRAIN_CSV, TRAIN_CLEAN_CSV):
        fetch(f"{base_url}/metadata/{csv}", gldv2_dir / csv, MAX_CSV_BYTES)
    todo = [i for i in parts if not (gldv2_dir / WORK_DIR / f"{part_name(i)}.done").exists()]
    if todo:
        _run_parts(todo, gldv2_dir, base_url, jobs, len(parts))
    n_done = len(list((gldv2_dir / WORK_DIR).glob("images_*.tar.done")))
    return report_missing(gldv2_dir, n_done)
