"""Revisited Oxford and Paris, and the R1M distractors, as they lie on disk; the evaluation-time resizing.

Layout (docs/FACTS.md, "Data layout"; the one the released Token code reads)::

    <data_root>/test/<name>/gnd_<name>.pkl       imlist, qimlist and one ground-truth dict per query
    <data_root>/test/<name>/jpg/<image>.jpg      every database and query image
    <data_root>/test/revisitop1m/revisitop1m.txt the official R1M image list, one path a line, relative to jpg/
    <data_root>/test/revisitop1m/jpg/<path>      the 1,001,001 distractors, in the official archives' sub-folders

``<name>`` is ``roxford5k``, ``rparis6k`` or any set written in the same format. Image names in ``imlist`` and
``qimlist`` come without extension; like the official readers, an entry without an extension gets ``.jpg``
(the R1M list may carry its own). ``python -m datasets.download revisitop`` builds this layout.
"""

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from datasets.images import load_rgb, to_normalized_tensor
from utils.errors import InputError
from utils.paths import relative_inside
from utils.safe_pickle import safe_load

R1M = "revisitop1m"
TEST_DIR = "test"  # the test sets' folder under the data root
IMAGES_DIR = "jpg"  # a test set's image folder

_LAYOUT = ("<data_root>/test/<name>/gnd_<name>.pkl and <data_root>/test/<name>/jpg/ "
           "(python -m datasets.download revisitop builds it)")
_R1M_LAYOUT = (f"<data_root>/test/{R1M}/{R1M}.txt and <data_root>/test/{R1M}/jpg/ "
               "(python -m datasets.download revisitop --r1m builds it)")
_INDEX_KEYS = ("easy", "hard", "junk")


def _image_file(images_dir, entry):
    """The file of a list entry: relative to ``jpg/``, ``.jpg`` appended when the entry has no extension."""
    return images_dir / (entry if PurePosixPath(entry).suffix else entry + ".jpg")


def _check_entry(entry, where):
    """Raise ``InputError`` naming ``where`` and the entry when an image list entry would leave ``jpg/``."""
    try:
        relative_inside(entry)
    except ValueError as err:
        raise InputError(f"{where} ({entry!r}) must be a path inside jpg/, not {err}") from None


def dataset_dir(data_root, name):
    """The folder of test set ``name`` under ``data_root``: ``<data_root>/test/<name>``."""
    return Path(data_root) / TEST_DIR / name


def images_dir(data_root, name):
    """The image folder of test set ``name``: ``<data_root>/test/<name>/jpg``."""
    return dataset_dir(data_root, name) / IMAGES_DIR


def gnd_path(data_root, name):
    """The ground truth of test set ``name``: ``<data_root>/test/<name>/gnd_<name>.pkl``."""
    return dataset_dir(data_root, name) / f"gnd_{name}.pkl"


@dataclass(frozen=True)
class RevisitopDataset:
    """One test set: database and query image names, and per query ``bbx`` (x0, y0, x1, y1) and index arrays.

    ``gnd[q]`` holds ``bbx`` as a tuple of 4 floats and ``easy``, ``hard``, ``junk`` as int64 arrays of
    database indices. The R1M distractors have no queries (``qimlist`` and ``gnd`` empty).
    """

    name: str
    root: Path
    imlist: list = field(repr=False)
    qimlist: list = field(repr=False)
    gnd: list = field(repr=False)

    @property
    def images_dir(self):
        return self.root / IMAGES_DIR

    def db_paths(self):
        return [_image_file(self.images_dir, entry) for entry in self.imlist]

    def query_paths(self):
        return [_image_file(self.images_dir, entry) for entry in self.qimlist]

    def bbxs(self):
        return [q["bbx"] for q in self.gnd]

    def missing_images(self):
        """Database and query image files that do not exist."""
        return [path for path in self.db_paths() + self.query_paths() if not path.is_file()]

    def check_images(self):
        """Raise ``InputError`` naming the missing images, if any (a skipped image would falsify mAP)."""
        missing = self.missing_images()
        if missing:
            shown = ", ".join(str(path) for path in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise InputError(f"{self.name}: {len(missing)} image(s) missing: {shown}{more}")


def load_revisitop(data_root, name):
    """Read and validate ``<data_root>/test/<name>``; ``name`` ``revisitop1m`` reads the R1M image list.

    Missing folders or files raise ``InputError`` naming the path and the expected layout; a malformed
    ground truth raises ``InputError`` naming the query and the problem. Image files are not opened here
    (``check_images`` checks they exist).
    """
    data_root = Path(data_root)
    root = dataset_dir(data_root, name)
    layout = _R1M_LAYOUT if name == R1M else _LAYOUT
    for path in (data_root, root, root / IMAGES_DIR):
        if not path.is_dir():
            raise InputError(f"{path} not found: expected the layout {layout}")
    if name == R1M:
        return RevisitopDataset(name, root, _read_image_list(root / f"{R1M}.txt"), [], [])
    pkl = gnd_path(data_root, name)
    if not pkl.is_file():
        raise InputError(f"{pkl} not found: expected the layout {layout}")
    imlist, qimlist, gnd = _parse_gnd(safe_load(pkl), pkl)
    return RevisitopDataset(name, root, imlist, qimlist, gnd)


def _read_image_list(path):
    if not path.is_file():
        raise InputError(f"{path} not found: expected the layout {_R1M_LAYOUT}")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            _check_entry(line.strip(), f"{path}: line {number}")
            entries.append(line.strip())
    return entries


def _parse_gnd(data, pkl):
    """``(imlist, qimlist, gnd)`` from an unpickled ground truth, every field checked."""
    if not isinstance(data, dict) or any(key not in data for key in ("imlist", "qimlist", "gnd")):
        raise InputError(f"{pkl}: expected a dict with 'imlist', 'qimlist' and 'gnd'")
    imlist, qimlist, raw = data["imlist"], data["qimlist"], data["gnd"]
    for key, names in (("imlist", imlist), ("qimlist", qimlist)):
        if not isinstance(names, (list, tuple)) or not all(isinstance(entry, str) for entry in names):
            raise InputError(f"{pkl}: '{key}' must be a list of image names")
        for number, entry in enumerate(names):
            _check_entry(entry, f"{pkl}: '{key}' entry {number}")
    if not isinstance(raw, (list, tuple)) or len(raw) != len(qimlist):
        raise InputError(f"{pkl}: 'gnd' must hold one dict per query ({len(qimlist)} queries)")
    return list(imlist), list(qimlist), [_parse_query(q, raw[q], len(imlist), pkl) for q in range(len(raw))]


def _parse_query(q, entry, n_db, pkl):
    """One query's ground truth: ``bbx`` as 4 floats, ``easy``, ``hard``, ``junk`` as in-range int64 arrays."""
    where = f"{pkl}: query {q}"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a dict with 'bbx', 'easy', 'hard' and 'junk'")
    for key in ("bbx",) + _INDEX_KEYS:
        if key not in entry:
            raise InputError(f"{where}: missing '{key}'")
    parsed = {"bbx": _parse_bbx(entry["bbx"], where)}
    for key in _INDEX_KEYS:
        try:
            indices = np.asarray(entry[key]).ravel()
        except (TypeError, ValueError):
            raise InputError(f"{where}: '{key}' must be a list of database indices") from None
        if indices.size == 0:
            indices = indices.astype(np.int64)
        if indices.dtype.kind not in "iu":
            raise InputError(f"{where}: '{key}' must hold integer database indices, got {indices.dtype}")
        bad = indices[(indices < 0) | (indices >= n_db)]
        if bad.size:
            raise InputError(f"{where}: '{key}' index {bad[0]} outside the {n_db} database images")
        parsed[key] = indices.astype(np.int64)
    return parsed


def _parse_bbx(bbx, where):
    try:
        box = np.asarray(bbx, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(f"{where}: 'bbx' must be 4 numbers (x0, y0, x1, y1), got {bbx!r}") from None
    if box.size != 4 or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"{where}: 'bbx' must be 4 finite numbers with x0 < x1 and y0 < y1, got {bbx!r}")
    return tuple(float(v) for v in box)


def resize_database(img, imsize):
    """A database image with its longer side brought down to ``imsize``, aspect kept (never upscaled); ``imsize``
    None keeps the original size.

    Exactly ``img.thumbnail((imsize, imsize), Image.LANCZOS)`` on a copy, the reference's resizing.
    """
    out = img.copy()
    if imsize is not None:
        out.thumbnail((imsize, imsize), Image.Resampling.LANCZOS)
    return out


def resize_query(img, bbx, imsize):
    """A query cropped to ``bbx``, then resized so that it keeps the scale it has in the resized full image.

    The crop is PIL's ``img.crop(bbx)`` with the float box (PIL rounds each coordinate; parts of the box
    beyond the image come out black), as in the reference. Its longer side is then brought down to
    ``imsize * crop longer side / full image longer side`` with ``resize_database``'s thumbnail semantics
    (``imsize`` None: the crop at its original size).

    A box must overlap the image and be at most twice its width and height (raises ``InputError``): a box
    far larger than its image is a broken ground truth, and its mostly black crop could take any memory.
    """
    x0, y0, x1, y1 = (round(v) for v in bbx)
    if x0 >= img.width or y0 >= img.height or x1 <= 0 or y1 <= 0 or x1 <= x0 or y1 <= y0:
        raise InputError(f"bbx {tuple(bbx)} does not overlap the {img.width}x{img.height} query image")
    if x1 - x0 > 2 * img.width or y1 - y0 > 2 * img.height:
        raise InputError(f"bbx {tuple(bbx)} is more than twice the width or height of the {img.width}x{img.height} "
                         "query image")
    crop = img.crop(tuple(bbx))
    return crop if imsize is None else resize_database(crop, imsize * max(crop.size) / max(img.size))


class RevisitopImages(torch.utils.data.Dataset):
    """Images read with ``load_rgb``, resized for evaluation, as ImageNet-normalised tensors.

    ``bbxs`` given: the images are queries, cropped with ``resize_query``; otherwise database images
    resized with ``resize_database``. Items are ``(tensor 3 x H x W, index)``. An unreadable image raises:
    it is never skipped, since a missing row would silently change the mAP.
    """

    def __init__(self, paths, imsize, bbxs=None):
        if bbxs is not None and len(bbxs) != len(paths):
            raise ValueError(f"{len(bbxs)} boxes for {len(paths)} images")
        self.paths = list(paths)
        self.imsize = imsize
        self.bbxs = bbxs
        self.to_tensor = to_normalized_tensor()

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        img = load_rgb(path)
        if self.bbxs is None:
            img = resize_database(img, self.imsize)
        else:
            try:
                img = resize_query(img, self.bbxs[index], self.imsize)
            except InputError as err:
                raise InputError(f"{path}: {err}") from None
        return self.to_tensor(img), index
