"""A user's own collection of images: a folder searched recursively, or a text file of image paths one a line
(relative to a root folder, as deep-image-retrieval's ``ImageList``), read with the evaluation's database resizing.

A collection is not a benchmark: a file that cannot be decoded is not an error but a skipped item
(``CollectionImages`` gives ``None`` for it), and a path listed twice is kept once.
"""

import logging
import os
from pathlib import Path

from datasets.images import ImageReadError
from datasets.revisitop import RevisitopImages
from utils.errors import InputError
from utils.paths import relative_inside

log = logging.getLogger(__name__)
# the names an index's files of one path a line hold: one line (no \n, \r, U+2028... that str.splitlines splits
# at) and UTF-8 (not a byte name that decodes to surrogates); the others are left out with a warning
SHOWN_LEFT_OUT = 10


def _walk_once(folder):
    """The files under ``folder``, hidden files and folders left out, following links to folders but entering
    each real folder (device, inode) once: a link loop (``self -> .``, ``up -> ..``) neither repeats a file nor
    makes the walk endless."""
    entered = set()
    for current, dirs, names in os.walk(folder, followlinks=True):
        status = os.stat(current)
        if (status.st_dev, status.st_ino) in entered:
            dirs[:] = []
            continue
        entered.add((status.st_dev, status.st_ino))
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        yield from (Path(current) / name for name in names if not name.startswith("."))


def _listed_path(listing, base, absolute_allowed, number, entry):
    """The absolute path that line ``number`` of the image list ``listing`` names: ``entry`` inside ``base``
    (``utils.paths.relative_inside``), or, without ``--root`` only, an absolute path taken as it is."""
    if absolute_allowed and os.path.isabs(entry):
        return os.path.abspath(entry)
    try:
        relative_inside(entry)
    except ValueError as err:
        raise InputError(f"--images {listing}: line {number} ({entry!r}) must be a path inside {base}, "
                         f"not {err}") from None
    return os.path.abspath(base / entry)


def list_images(source, root=None):
    """Absolute paths of the images of ``source`` in a stable order, duplicates kept once (first place).

    ``source``: a folder (every file under it, hidden files and folders left out, each real folder entered once
    however many links lead to it, sorted by path) or a text file of paths one a line (blank lines and lines
    starting with ``#`` ignored), each relative to ``root`` and inside it (``utils.paths.relative_inside``: no
    ``..`` part), or, when ``root`` is not given, relative to the list's own folder and inside it, or absolute.
    Which files are images is found when they are read. Names that hold a line break or are not UTF-8 are left
    out with a warning (``_one_line_names``).
    """
    source = Path(source)
    if source.is_dir():
        if root is not None:
            raise InputError(f"--root {root}: only for a text file of paths, but --images {source} is a folder")
        paths = sorted(os.path.abspath(path) for path in _walk_once(source))
    elif source.is_file():
        base = Path(root) if root is not None else source.parent
        if root is not None and not base.is_dir():
            raise InputError(f"--root {root} not found: expected the folder the paths of {source} are relative to")
        try:
            lines = source.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--images {source}: cannot read it as a text file of image paths ({err})") from None
        entries = ((number, line.strip()) for number, line in enumerate(lines, 1))
        paths = [_listed_path(source, base, root is None, number, entry) for number, entry in entries
                 if entry and not entry.startswith("#")]
    else:
        raise InputError(f"--images {source} not found: expected a folder of images or a text file of image paths")
    return _one_line_names(list(dict.fromkeys(paths)), source)


def _holds(path):
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return path.splitlines() == [path]


def _one_line_names(paths, source):
    """``paths`` less the names a file of one path a line cannot hold, which a warning lists (``ascii``, so
    that any terminal shows them)."""
    kept, left_out = [], []
    for path in paths:
        (kept if _holds(path) else left_out).append(path)
    left_out = [ascii(path) for path in left_out]
    if left_out:
        more = f" and {len(left_out) - SHOWN_LEFT_OUT} more" if len(left_out) > SHOWN_LEFT_OUT else ""
        log.warning("--images %s: %d files left out, their names hold a line break or are not UTF-8 (an index "
                    "lists one path a line): %s%s; rename them to index them", source, len(left_out),
                    ", ".join(left_out[:SHOWN_LEFT_OUT]), more)
    return kept


class CollectionImages(RevisitopImages):
    """Database-resized images as ``(tensor 3 x H x W, index)``; ``(None, index)`` for a file that cannot be
    read as an image (``retrieval.extract.extract`` leaves its row NaN)."""

    def __getitem__(self, index):
        try:
            return super().__getitem__(index)
        except ImageReadError:
            return None, index
