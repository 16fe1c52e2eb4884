"""An index of a user's own images: built from a folder or an image list, added to, searched; index.py is its
command line.

Layout of an index folder ``DIR``::

    index.json          what the index is: checkpoint (path, size, modification time), extraction settings,
                        whitening, search structure, descriptor size, image count, the parts below and the size and
                        SHA-256 of every file the index reads (``retrieval.index_files``: a file is read only when
                        it is the one listed); written last, so it names only files that are complete
    index.lock          locked (``fcntl.flock``) by the build or add writing the index, which it names: a second
                        one is refused (``utils.locking``)
    paths.txt           absolute path of every indexed image, one a line (UTF-8), in row order (names a line
                        cannot hold are left out by ``datasets.collection.list_images``)
    descriptors.npy     float32 (images x d) multi-scale descriptors, L2-normalised, rows in paths.txt order (the
                        format deep-image-retrieval exports); not whitened
    skipped.txt         files that could not be read as images, one a line
    whitening.npz       the whitening the search applies (only with --whiten-file / --whiten)
    search.faiss        the search structure over the (whitened) descriptors: exact inner product (faiss
                        IndexFlatIP) up to EXACT_MAX_IMAGES images, beyond it the compressed index of test.py --r1m
    features/<part>.*   one part per build or add, named by its candidate paths (collection-<hash>, add-<hash>):
                        its descriptors, kept in the feature store (retrieval.features: shards, resumed after a
                        kill, reused when nothing changed; an unreadable file's row is NaN), and its paths
                        (<part>.txt), written once its descriptors are complete. A build or add of other images
                        writes a part of its own, so one killed or failed leaves the index's parts as they were

The descriptors are computed as test.py computes database descriptors (``retrieval.extract``); query images as
well, cropped to their box first when one is given (``datasets.revisitop.resize_query``).
"""

import hashlib
import os
import re
import time
from pathlib import Path

import faiss
import numpy as np

from datasets.collection import CollectionImages, list_images
from datasets.revisitop import RevisitopImages
from networks.pca_whitening import PCAWhitening
from retrieval.descriptor_whitening import (
    check_dim,
    check_power,
    chosen_whitening,
    read_whitening,
    save_whitening,
    whiten_rows,
)
from retrieval.extract import extract, extract_spans, load_for_extraction
from retrieval.features import FeatureStore, feature_key, save_array
from retrieval.index_files import INDEX_FILE, checked, file_entry, read_lines, read_rows, read_structure
from retrieval.search import R1M_COMPRESSED, CompressedSearch
from retrieval.settings import ExtractionSettings, check_extraction, model_scales, with_checkpoint_file
from utils.atomic import atomic_write, read_json, save_json
from utils.errors import InputError
from utils.locking import exclusive
from utils.paths import writable_folder

FORMAT = 1
PATHS, DESCRIPTORS, SKIPPED, WHITENING, SEARCH, LOCK = (
    "paths.txt", "descriptors.npy", "skipped.txt", "whitening.npz", "search.faiss", "index.lock")
# exact search up to this many images, the compressed index beyond: python -m benchmarks.index (docs/benchmarks.md)
EXACT_MAX_IMAGES = 50_000
SEARCHES = ("auto", "exact", "compressed")
# the ExtractionSettings that index.json keeps (with the search): the others are each run's own
STORED = ("checkpoint", "imsize", "scales", "amp", "whiten", "whiten_file", "whiten_power")
# the names of the parts that index.json lists: those _part_name gives, which no path can leave features/ by
# ("collection" alone: an index of an index.py before the SHA-256 of its files, which a build replaces)
PART = re.compile(r"collection(-[0-9a-f]{12})?|add-[0-9a-f]{12}")


def resolve_whitening(settings, model):
    """The ``PCAWhitening`` that ``settings`` ask for (None without one), checked against the model's size."""
    return chosen_whitening(model, settings.whiten, settings.whiten_file)


def _checkpoint_ref(checkpoint):
    return feature_key(checkpoint, 0, (), False, [])["checkpoint"]


def _extract_part(index_dir, model, settings, env, kind, paths):
    """Descriptors of ``paths`` as a new part (``_part_name(kind, paths)``) of the index's feature store; NaN rows for
    files that are not readable images; the part's paths are written once its descriptors are complete. Returns the
    part's name, the images extracted by this run and its seconds."""
    store = FeatureStore(Path(index_dir) / "features", env, settings.progress)
    name = _part_name(kind, paths)
    start = time.perf_counter()
    key = feature_key(settings.checkpoint, settings.imsize, settings.scales, settings.amp, paths)
    dim = model.config.descriptor_dim
    extracted = 0

    def compute(spans, progress):
        nonlocal extracted
        extracted += sum(stop - start for start, stop in spans)
        return extract_spans(model, CollectionImages(paths, settings.imsize), spans, dim, env.device,
                             settings.scales, settings.batch_size, settings.workers, settings.amp, progress)

    store.load(name, key, len(paths), dim, compute, settings.shard_size)
    if env.is_main:
        _write_lines(store.root / f"{name}.txt", paths)
    return name, extracted, time.perf_counter() - start


def _part_files(part):
    return [f"features/{part}.txt", f"features/{part}.npy"]


def _locked(index_dir, env):
    """The index's lock (``utils.locking.exclusive``), for the whole of a build or add."""
    return exclusive(Path(index_dir) / LOCK, f"--index {index_dir}", env)


def _part_name(kind, paths):
    """``<kind>-<12 hex digits>``, named by ``paths``: a build or add of other paths extracts into a part of its
    own, and never touches the files of the index's parts before its index.json replaces the old one."""
    return f"{kind}-" + hashlib.sha256("\n".join(paths).encode()).hexdigest()[:12]


def check_parts(meta, index_dir):
    """The parts ``meta`` (index.json) lists, each a name of ``PART``: a part's files are read, and deleted by a
    build, under features/ by its name, so a name of an edited index.json (``../../victim``, an absolute path)
    must not reach beyond it. ``InputError`` naming index.json and the entry otherwise."""
    parts = meta.get("parts")
    if not isinstance(parts, list) or not parts:
        raise InputError(f"{Path(index_dir) / INDEX_FILE}: 'parts' must be a list of the index's parts, got {parts!r}")
    for part in parts:
        if not isinstance(part, str) or not PART.fullmatch(part):
            raise InputError(f"{Path(index_dir) / INDEX_FILE}: the part {part!r} is not one index.py writes "
                             "(collection-<12 hex digits> or add-<12 hex digits>); build the index in a new "
                             "folder")
    return parts


def build(images, index_dir, settings, env, root=None, search="auto"):
    """Index the images of ``images`` (a folder or a list, see ``datasets.collection.list_images``) in
    ``index_dir`` with the ``ExtractionSettings`` ``settings``, replacing what it held; ``search``: one of
    ``SEARCHES`` (``search_kind``). Returns a summary dict (rank 0; None elsewhere)."""
    check_extraction(settings, env.device)
    if search not in SEARCHES:
        raise InputError(f"search must be auto, exact or compressed, got {search!r}")
    index_dir = writable_folder(index_dir, "--index")
    settings = with_checkpoint_file(settings)  # a released name: its file
    paths = list_images(images, root)
    if not paths:
        raise InputError(f"--images {images}: no files found")
    model = load_for_extraction(settings.checkpoint, env.device)
    settings = model_scales(settings, model)  # stored in index.json: add and query extract alike
    whitening = resolve_whitening(settings, model)
    with _locked(index_dir, env):
        previous = read_json(index_dir / INDEX_FILE)
        previous = check_parts(previous, index_dir) if isinstance(previous, dict) and "parts" in previous else []
        part, extracted, seconds = _extract_part(index_dir, model, settings, env, "collection", paths)
        if not env.is_main:
            return None
        stored = {**{name: getattr(settings, name) for name in STORED}, "search": search}
        meta = {"format": FORMAT, "checkpoint_file": _checkpoint_ref(settings.checkpoint), "settings": stored,
                "dim": model.config.descriptor_dim, "parts": [part]}
        summary = write_index(index_dir, meta, whitening, _new_part(index_dir, part))
        _forget_parts(index_dir, [old for old in previous if old != part])
    return {**summary, "extracted": extracted, "seconds": seconds}


def _forget_parts(index_dir, parts):
    """Remove the files of ``parts`` (checked by ``check_parts``), which the previous index listed and the
    index.json just written no longer lists: a build starts the index anew."""
    for part in parts:
        for suffix in (".npy", ".json", ".txt", ".lock"):
            (Path(index_dir) / "features" / f"{part}{suffix}").unlink(missing_ok=True)


def read_meta(index_dir):
    """index.json of ``index_dir``; ``InputError`` when it is not an index, lists a part it does not write
    (``check_parts``) or does not list its files (``retrieval.index_files``)."""
    meta = read_json(Path(index_dir) / INDEX_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"--index {index_dir}: no index there (expected {INDEX_FILE}, written by index.py build)")
    check_parts(meta, index_dir)
    if not isinstance(meta.get("files"), dict):
        raise InputError(f"--index {index_dir}: its {INDEX_FILE} lists no SHA-256 of its files (an index.py before "
                         "they were checked wrote it); run build again")
    return meta


def stored_settings(meta, **run):
    """The ``ExtractionSettings`` an index was built with, with this run's ``run`` options (workers, batch
    size...)."""
    return ExtractionSettings(**{name: meta["settings"][name] for name in STORED}, **run)


def _check_checkpoint(meta, index_dir):
    ref = meta["checkpoint_file"]
    if not os.path.isfile(ref["path"]):
        raise InputError(f"--index {index_dir}: its checkpoint {ref['path']} is gone; build the index again")
    if _checkpoint_ref(ref["path"]) != ref:
        raise InputError(f"--index {index_dir}: its checkpoint {ref['path']} changed since the index was built "
                         "(size or modification time); build the index again")


def add(images, index_dir, env, root=None, **run):
    """Append the images of ``images`` that ``index_dir`` does not hold yet, with the index's own checkpoint
    and settings; ``run``: this run's batch size, workers, device, shard size, progress. A summary dict (rank 0)."""
    index_dir = writable_folder(index_dir, "--index")
    read_meta(index_dir)  # a folder that is no index is refused before its lock file is made there
    with _locked(index_dir, env):
        meta = read_meta(index_dir)
        _check_checkpoint(meta, index_dir)
        settings = stored_settings(meta, **run)
        check_extraction(settings, env.device)
        files = meta["files"]
        indexed = set(read_lines(checked(index_dir, files, PATHS)))
        tried = indexed | set(read_lines(checked(index_dir, files, SKIPPED)))  # not read again; build rereads all
        whitening = read_whitening(checked(index_dir, files, WHITENING)) if WHITENING in files else None
        parts = _checked_parts(index_dir, meta["parts"], files)
        candidates = list_images(images, root)
        new = [path for path in candidates if path not in tried]
        if not new:
            return {"count": meta["count"], "skipped": meta["skipped"], "search": meta["search"], "added": 0,
                    "already": len(candidates), "extracted": 0, "seconds": 0.0} if env.is_main else None
        model = load_for_extraction(settings.checkpoint, env.device)
        name, extracted, seconds = _extract_part(index_dir, model, settings, env, "add", new)
        if not env.is_main:
            return None
        before = meta["count"]
        meta["parts"] = [part for part in meta["parts"] if part != name] + [name]
        summary = write_index(index_dir, meta, whitening, {**parts, **_new_part(index_dir, name)})
    return {**summary, "added": summary["count"] - before, "already": len(candidates) - len(new),
            "extracted": extracted, "seconds": seconds}


def _write_lines(path, lines):
    atomic_write(path, lambda f: f.write("".join(line + "\n" for line in lines).encode()))


def _checked_parts(index_dir, parts, listed):
    """The entries of ``listed`` (index.json's ``"files"``) for the files of ``parts``, each checked (``checked``)
    so that a part's paths are never paired with the rows of another run."""
    for part in parts:
        for name in _part_files(part):
            checked(index_dir, listed, name)
    return {name: listed[name] for part in parts for name in _part_files(part)}


def _new_part(index_dir, part):
    """index.json's entries for the files of ``part``, which this run has just written."""
    return {name: file_entry(Path(index_dir) / name) for name in _part_files(part)}


def assemble(features_dir, parts, dim):
    """``(paths, descriptors, skipped)`` of the parts, in order: readable rows (finite; an unreadable file's is
    NaN) kept, each path once."""
    paths, rows, skipped = [], [], []
    for part in parts:
        part_paths = read_lines(features_dir / f"{part}.txt")
        features = read_rows(features_dir / f"{part}.npy", len(part_paths), dim, finite=False)
        readable = np.isfinite(features).all(axis=1)
        paths += [p for p, ok in zip(part_paths, readable, strict=True) if ok]
        rows.append(features[readable])
        skipped += [p for p, ok in zip(part_paths, readable, strict=True) if not ok]
    kept = set(paths)
    return paths, np.concatenate(rows), list(dict.fromkeys(p for p in skipped if p not in kept))


def search_kind(requested, count):
    """``exact`` or ``compressed``: as requested, or by size (``EXACT_MAX_IMAGES``) for ``auto``."""
    if requested != "auto":
        return requested
    return "exact" if count <= EXACT_MAX_IMAGES else "compressed"


def search_structure(vectors, kind):
    """The faiss index of ``kind`` over ``vectors`` (n x d float32, L2-normalised), scored by inner product."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "exact":
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return index
    try:
        return CompressedSearch([vectors], **R1M_COMPRESSED).index
    except ValueError as err:
        raise InputError(f"--compressed: {err}") from None


def apply_whitening(whitening, vectors, power):
    return vectors if whitening is None else whiten_rows(whitening, vectors, power)


def write_index(index_dir, meta, whitening, parts):
    """Write the index files of ``meta``'s parts, index.json last with the size and SHA-256 of each and the
    entries ``parts`` of the parts' files; a summary dict. Whatever can fail on the input is done before the first
    file is written, so that a failed build or add leaves the index as it was."""
    files = dict(parts)
    paths, descriptors, skipped = assemble(index_dir / "features", meta["parts"], meta["dim"])
    if not paths:
        raise InputError(f"none of the {len(skipped)} files could be read as an image ({skipped[0]}, ...); the "
                         "index is left as it was")
    settings = meta["settings"]
    kind = search_kind(settings["search"], len(paths))
    vectors = apply_whitening(whitening, descriptors, settings["whiten_power"])
    structure = faiss.serialize_index(search_structure(vectors, kind))
    save_array(index_dir / DESCRIPTORS, descriptors)
    _write_lines(index_dir / PATHS, paths)
    _write_lines(index_dir / SKIPPED, skipped)
    atomic_write(index_dir / SEARCH, lambda f: f.write(structure.tobytes()))
    written = [DESCRIPTORS, PATHS, SKIPPED, SEARCH]
    if whitening is not None:
        written.append(save_whitening(index_dir / WHITENING, whitening).name)
    files.update({name: file_entry(index_dir / name) for name in written})
    save_json(index_dir / INDEX_FILE, {**meta, "count": len(paths), "skipped": len(skipped), "search": kind,
                                       "files": files})
    if whitening is None:
        (index_dir / WHITENING).unlink(missing_ok=True)  # no longer listed: never read
    return {"count": len(paths), "skipped": len(skipped), "search": kind}


class ImageIndex:
    """An index folder opened for queries: paths, search structure, whitening and model loaded once.
    ``whiten_file`` / ``whiten_power`` search with another whitening than the index's own: the search structure
    is then rebuilt in memory from the raw descriptors."""

    def __init__(self, index_dir, device, whiten_file=None, whiten_power=None, batch_size=8, workers=0):
        self.dir = Path(index_dir)
        self.meta = read_meta(self.dir)
        _check_checkpoint(self.meta, self.dir)
        self.settings = stored_settings(self.meta, batch_size=batch_size, workers=workers, progress=False)
        self.device = device
        self.power = check_power(self.settings.whiten_power if whiten_power is None else whiten_power)
        files, count = self.meta["files"], self.meta["count"]
        self.paths = read_lines(checked(self.dir, files, PATHS))
        if len(self.paths) != count:
            raise InputError(f"--index {self.dir}: {PATHS} holds {len(self.paths)} paths, {INDEX_FILE} {count}; "
                             "run build again")
        self.whitening = read_whitening(checked(self.dir, files, WHITENING)) if WHITENING in files else None
        if whiten_file is None and whiten_power in (None, self.settings.whiten_power):
            dim = self.meta["dim"] if self.whitening is None else self.whitening.components.shape[0]
            self.structure = read_structure(checked(self.dir, files, SEARCH), count, dim)
        else:
            if whiten_file is not None:
                self.whitening = check_dim(read_whitening(whiten_file), self.meta["dim"],
                                           f"--whiten-file {whiten_file}")
            self.structure = self._rebuilt()
        self.model = load_for_extraction(self.settings.checkpoint, device)

    def _rebuilt(self):
        descriptors = read_rows(checked(self.dir, self.meta["files"], DESCRIPTORS), self.meta["count"],
                                self.meta["dim"])
        return search_structure(apply_whitening(self.whitening, descriptors, self.power), self.meta["search"])

    def describe(self, images, boxes=None):
        """Multi-scale descriptors of query images (cropped to ``boxes`` when given, one per image), whitened
        as the index is."""
        s = self.settings
        dataset = RevisitopImages(images, s.imsize, boxes)
        vectors = extract(self.model, dataset, self.meta["dim"], self.device, s.scales, s.batch_size, s.workers,
                          s.amp)
        return apply_whitening(self.whitening, vectors, self.power)

    def search(self, vectors, topk):
        """``[[(path, score), ...]]``: the ``topk`` best of the index per query vector."""
        scores, ids = self.structure.search(np.ascontiguousarray(vectors, dtype=np.float32), min(topk, len(self.paths)))
        return [[(self.paths[i], float(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
                for row_s, row_i in zip(scores, ids, strict=True)]


def query(index, images, topk=10, boxes=None):
    """The top ``topk`` of each of ``images`` in ``index`` as ``[{"query", "results": [{"path", "score"}]}]``,
    and ``{"describe", "search"}``: the ms per query of its descriptor and of the search."""
    start = time.perf_counter()
    vectors = index.describe([os.path.abspath(image) for image in images], boxes)
    described = time.perf_counter()
    found = index.search(vectors, topk)
    ms = {"describe": 1000 * (described - start) / len(images),
          "search": 1000 * (time.perf_counter() - described) / len(images)}
    return [{"query": str(image), "results": [{"path": p, "score": s} for p, s in hits]}
            for image, hits in zip(images, found, strict=True)], ms


def learn_whitening(index_dir, dims=None):
    """A PCA whitening (``networks.pca_whitening.PCAWhitening.fit``) of an index's raw descriptors."""
    meta = read_meta(index_dir)
    descriptors = read_rows(checked(index_dir, meta["files"], DESCRIPTORS), meta["count"], meta["dim"])
    try:
        return PCAWhitening.fit(descriptors, dims)
    except ValueError as err:
        raise InputError(f"--index {index_dir}: {err}") from None
