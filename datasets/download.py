"""Fetch the evaluation data into the layout ``datasets/revisitop.py`` reads.

    python -m datasets.download revisitop --data-root DIR [--datasets roxford5k rparis6k] [--r1m]

Sources (base URLs overridable, see ``--help``):

- ROxf images: ``oxbuild_images-v1.tgz`` from the Oxford VGG site, the jpgs at the archive's top level;
- RPar images: ``paris_1-v1.tgz`` and ``paris_2-v1.tgz``, the jpgs in ``paris/<landmark>/`` sub-folders (a few
  of them corrupt: the revisited image lists leave those out). Both are flattened into ``jpg/``;
- the revisited ground truth ``<gnd-url>/<name>/gnd_<name>.pkl`` from the revisitop site;
- with ``--r1m``, the distractors: ``<r1m-url>/revisitop1m.txt`` and the 100 parts
  ``<r1m-url>/jpg/revisitop1m.<i>.tar.gz``, extracted into ``jpg/`` keeping their sub-folders.

Every download goes to ``<file>.part`` and is renamed once its size matches what the server announced; an
interrupted one resumes from the ``.part`` with an HTTP Range request (and restarts when the server ignores
it). Extraction writes each image under a temporary name and renames it, and reads each gzip stream to its
end, so its checksum is verified. A rerun skips what is done: the ground truth once downloaded, ROxf/RPar
archives once every listed image is present (they are then deleted), and R1M parts whose ``.done`` marker
exists (each part is deleted after its extraction). Every image of every list is checked at the end.
"""

import argparse
import gzip
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from datasets.revisitop import R1M, dataset_dir, gnd_path, images_dir, load_revisitop
from utils.errors import InputError, fail_cleanly

OXFORD_URL = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings"
PARIS_URL = "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings"
GND_URL = "http://cmp.felk.cvut.cz/revisitop/data/datasets"
R1M_URL = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
ARCHIVES = {"roxford5k": ("oxbuild_images-v1.tgz",), "rparis6k": ("paris_1-v1.tgz", "paris_2-v1.tgz")}
R1M_PARTS = 100
TIMEOUT_S = 60
_CHUNK = 1 << 20


class DownloadError(InputError):
    """A download or an extraction that failed. Reported like bad input: one line, exit code 2."""


def _content_range(header):
    """``(start, total)`` from ``bytes a-b/total`` or ``bytes */total`` (``None`` for what is absent)."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def fetch(url, dest, desc=None):
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial one. False if ``dest`` exists."""
    dest = Path(dest)
    if dest.is_file():
        return False
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left past the .part: complete if the sizes agree, else restart
            if _content_range(err.headers.get("Content-Range"))[1] == have:
                part.replace(dest)
                return True
            part.unlink()
            return fetch(url, dest, desc)
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, HTTPException) as err:
        raise DownloadError(f"{url}: {getattr(err, 'reason', err)}") from None

    with response:
        start, total = _content_range(response.headers.get("Content-Range"))
        if response.status == 206 and start != have:  # not the part asked for: start again from scratch
            part.unlink()
            return fetch(url, dest, desc)
        if response.status == 206:
            mode = "ab"
        else:  # the server sent the whole file
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        try:
            with open(part, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                               unit_divisor=1024, desc=desc or dest.name) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, HTTPException) as err:
            raise DownloadError(f"{url}: interrupted ({err.__class__.__name__}: {err}); rerun to resume "
                                f"from {part}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size} of {total} bytes; rerun to resume from {part}")
    part.replace(dest)
    return True


def _member_target(images_dir, name, flatten):
    """Where an archive member goes: ``jpg/<basename>`` for jpgs when flattening, else its relative path."""
    path = PurePosixPath(name)
    if flatten:
        return images_dir / path.name if path.suffix.lower() == ".jpg" else None
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts or not parts:
        raise DownloadError(f"archive member {name!r} is not a relative path inside jpg/")
    return images_dir.joinpath(*parts)


def extract(archive, images_dir, flatten):
    """Write the files of a ``.tar.gz`` under ``images_dir``; returns how many.

    Each file is written under a temporary name then renamed, so a present file is a complete one. The gzip
    stream is read to its end, which checks its CRC. A corrupt archive raises ``DownloadError`` after the
    files it gave and the archive itself are deleted, so that a rerun downloads and extracts it again.
    """
    archive = Path(archive)
    written = []
    try:
        with gzip.open(archive, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar, \
                tqdm(unit=" files", desc=f"extract {archive.name}") as bar:
            for member in tar:
                target = _member_target(images_dir, member.name, flatten) if member.isfile() else None
                if target is None:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                with tar.extractfile(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                tmp.replace(target)
                written.append(target)
                bar.update()
            while stream.read(_CHUNK):
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        for path in written + [archive]:
            path.unlink()
        raise DownloadError(f"{archive}: corrupt archive ({err.__class__.__name__}: {err}); deleted it and "
                            "its files, rerun to download it again") from None
    return len(written)


def download_revisitop(data_root, name, images_url, gnd_url=GND_URL):
    """ROxf or RPar: ground truth, then (unless every listed image is there) the image archives."""
    root = dataset_dir(data_root, name)
    images_dir(data_root, name).mkdir(parents=True, exist_ok=True)
    gnd = gnd_path(data_root, name)
    fetch(f"{gnd_url}/{name}/gnd_{name}.pkl", gnd)
    try:
        dataset = load_revisitop(data_root, name)
    except InputError as err:
        raise DownloadError(f"{err} (delete {gnd} to download it again)") from None
    archives = ARCHIVES[name]
    if dataset.missing_images():
        for archive in archives:
            fetch(f"{images_url}/{archive}", root / archive)
        for archive in archives:
            extract(root / archive, images_dir(data_root, name), flatten=True)
    dataset.check_images()
    for archive in archives:
        (root / archive).unlink(missing_ok=True)
    print(f">> {name}: {len(dataset.imlist)} database and {len(dataset.qimlist)} query images in {root}")


def download_r1m(data_root, url=R1M_URL):
    """The R1M distractors: the image list, then each part not yet marked done (downloaded, extracted, deleted)."""
    root = dataset_dir(data_root, R1M)
    images_dir(data_root, R1M).mkdir(parents=True, exist_ok=True)
    fetch(f"{url}/{R1M}.txt", root / f"{R1M}.txt")
    parts = R1M_PARTS
    for i in range(1, parts + 1):
        archive = root / f"{R1M}.{i}.tar.gz"
        done = root / f"{archive.name}.done"
        if done.exists():
            continue
        fetch(f"{url}/jpg/{archive.name}", archive, desc=f"[{i}/{parts}] {archive.name}")
        extract(archive, images_dir(data_root, R1M), flatten=False)
        done.touch()
        archive.unlink()
    dataset = load_revisitop(data_root, R1M)
    dataset.check_images()
    print(f">> {R1M}: {len(dataset.imlist)} distractor images in {root}")


def _parser():
    parser = argparse.ArgumentParser(prog="python -m datasets.download", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    revisitop = commands.add_parser(
        "revisitop", help="revisited Oxford and Paris images and ground truth, optionally the R1M distractors",
        description="Download ROxf/RPar (and with --r1m the 1M distractors) into DATA_ROOT/test/<name>/. "
                    "Interrupted downloads resume; finished steps are skipped on a rerun.")
    revisitop.add_argument("--data-root", required=True, type=Path,
                           help="the data root shared with train.py and test.py (GLDv2 in "
                                "DATA_ROOT/Google-landmark-v2/); the images and ground truth go to "
                                "DATA_ROOT/test/<name>/")
    revisitop.add_argument("--datasets", nargs="*", choices=sorted(ARCHIVES), default=sorted(ARCHIVES),
                           help="which test sets to fetch (default: both; give none with --r1m for R1M only)")
    revisitop.add_argument("--r1m", action="store_true",
                           help=f"also fetch the 1,001,001 R1M distractors ({R1M_PARTS} large archives)")
    revisitop.add_argument("--oxford-url", default=OXFORD_URL, help=f"folder URL of {ARCHIVES['roxford5k'][0]}")
    revisitop.add_argument("--paris-url", default=PARIS_URL,
                           help=f"folder URL of {' and '.join(ARCHIVES['rparis6k'])}")
    revisitop.add_argument("--gnd-url", default=GND_URL, help="base URL of <name>/gnd_<name>.pkl")
    revisitop.add_argument("--r1m-url", default=R1M_URL,
                           help=f"base URL of {R1M}.txt and jpg/{R1M}.<i>.tar.gz")
    return parser


@fail_cleanly
def main(argv=None):
    args = _parser().parse_args(argv)
    images_url = {"roxford5k": args.oxford_url, "rparis6k": args.paris_url}
    for name in args.datasets:
        download_revisitop(args.data_root, name, images_url[name], args.gnd_url)
    if args.r1m:
        download_r1m(args.data_root, args.r1m_url)


if __name__ == "__main__":
    main()
