"""An index of a user's own images: built from a folder or an image list, added to, searched; index.py is its
command line.

Layout of an index folder ``DIR``::

    index.json          what the index is: checkpoint (path, size, modification time), extraction settings,
                        whitening, search structure, descriptor size, image count and the parts below; written
                        last, so it names only parts that are complete
    paths.txt           absolute path of every indexed image, one a line (UTF-8), in row order (names a line
                        cannot hold are left out by ``datasets.collection.list_images``)
    descriptors.npy     float32 (images x d) multi-scale descriptors, L2-normalised, rows in paths.txt order (the
                        format deep-image-retrieval exports); not whitened
    skipped.txt         files that could not be read as images, one a line
    whitening.npz       the whitening the search applies (only with --whiten-file / --whiten)
    search.faiss        the search structure over the (whitened) descriptors: exact inner product (faiss
                        IndexFlatIP) up to EXACT_MAX_IMAGES images, beyond it the compressed index of test.py --r1m
    features/<part>.*   one part per build or add: its candidate paths (<part>.txt) and its descriptors, kept in
                        the feature store (retrieval.features: shards, resumed after a kill, reused when nothing
                        changed); an unreadable file's row is NaN

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
from retrieval.descriptor_whitening import check_dim, chosen_whitening, read_whitening, save_whitening, whiten_rows
from retrieval.extract import extract, extract_spans, load_for_extraction
from retrieval.features import FeatureStore, feature_key, save_array
from retrieval.search import R1M_COMPRESSED, CompressedSearch
from retrieval.settings import ExtractionSettings, check_extraction, with_checkpoint_file
from utils.atomic import atomic_write, read_json, save_json
from utils.errors import InputError
from utils.paths import writable_folder

FORMAT = 1
INDEX_FILE, PATHS, DESCRIPTORS, SKIPPED, WHITENING, SEARCH = (
    "index.json", "paths.txt", "descriptors.npy", "skipped.txt", "whitening.npz", "search.faiss")
# exact search up to this many images, the compressed index beyond: python -m benchmarks.index (docs/benchmarks.md)
EXACT_MAX_IMAGES = 50_000
SEARCHES = ("auto", "exact", "compressed")
# the ExtractionSettings that index.json keeps (with the search): the others are each run's own
STORED = ("checkpoint", "imsize", "scales", "amp", "whiten", "whiten_file", "whiten_power")
# the names of the parts that index.json lists: those build and _part_name give, which no path can leave features/ by
PART = re.compile(r"collection|add-[0-9a-f]{12}")


def resolve_whitening(settings, model):
    """The ``PCAWhitening`` that ``settings`` ask for (None without one), checked against the model's size."""
    return chosen_whitening(model, settings.whiten, settings.whiten_file)


def _checkpoint_ref(checkpoint):
    return feature_key(checkpoint, 0, (), False, [])["checkpoint"]


def _extract_part(store, model, settings, env, name, paths):
    """Descriptors of ``paths`` as part ``name`` of the store (rank 0; None elsewhere); NaN rows for files that
    are not readable images. Returns ``(descriptors, images extracted by this run)``."""
    if env.is_main:
        atomic_write(store.root / f"{name}.txt", lambda f: f.write("".join(p + "\n" for p in paths).encode()))
    key = feature_key(settings.checkpoint, settings.imsize, settings.scales, settings.amp, paths)
    dim = model.config.descriptor_dim
    extracted = 0

    def compute(spans, progress):
        nonlocal extracted
        extracted += sum(stop - start for start, stop in spans)
        return extract_spans(model, CollectionImages(paths, settings.imsize), spans, dim, env.device,
                             settings.scales, settings.batch_size, settings.workers, settings.amp, progress)

    features, _ = store.load(name, key, len(paths), dim, compute, settings.shard_size)
    return features, extracted


def _part_name(paths):
    return "add-" + hashlib.sha256("\n".join(paths).encode()).hexdigest()[:12]


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
                             "(collection or add-<12 hex digits>); build the index in a new folder")
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
    previous = read_json(index_dir / INDEX_FILE)
    previous = check_parts(previous, index_dir) if isinstance(previous, dict) and "parts" in previous else []
    model = load_for_extraction(settings.checkpoint, env.device)
    whitening = resolve_whitening(settings, model)
    store = FeatureStore(index_dir / "features", env, settings.progress)
    start = time.perf_counter()
    _, extracted = _extract_part(store, model, settings, env, "collection", paths)
    seconds = time.perf_counter() - start
    if not env.is_main:
        return None
    _forget_added_parts(index_dir, previous)
    stored = {**{name: getattr(settings, name) for name in STORED}, "search": search}
    meta = {"format": FORMAT, "checkpoint_file": _checkpoint_ref(settings.checkpoint), "settings": stored,
            "dim": model.config.descriptor_dim, "parts": ["collection"]}
    return {**write_index(index_dir, meta, whitening), "extracted": extracted, "seconds": seconds}


def _forget_added_parts(index_dir, parts):
    """Remove the ``parts`` (checked by ``check_parts``) that earlier ``add`` runs left in the feature store: a
    build starts the index anew."""
    for part in parts:
        if part != "collection":
            for suffix in (".npy", ".json", ".txt"):
                (Path(index_dir) / "features" / f"{part}{suffix}").unlink(missing_ok=True)


def read_meta(index_dir):
    """index.json of ``index_dir``; ``InputError`` when it is not an index or lists a part it does not write
    (``check_parts``)."""
    meta = read_json(Path(index_dir) / INDEX_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"--index {index_dir}: no index there (expected {INDEX_FILE}, written by index.py build)")
    check_parts(meta, index_dir)
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
    meta = read_meta(index_dir)
    _check_checkpoint(meta, index_dir)
    settings = stored_settings(meta, **run)
    check_extraction(settings, env.device)
    indexed = set(_read_lines(index_dir / PATHS))
    tried = indexed | set(_read_lines(index_dir / SKIPPED))  # skipped files are not read again; build rereads all
    candidates = list_images(images, root)
    new = [path for path in candidates if path not in tried]
    if not new:
        return {"count": meta["count"], "skipped": meta["skipped"], "search": meta["search"], "added": 0,
                "already": len(candidates), "extracted": 0, "seconds": 0.0} if env.is_main else None
    model = load_for_extraction(settings.checkpoint, env.device)
    store = FeatureStore(index_dir / "features", env, settings.progress)
    start = time.perf_counter()
    name = _part_name(new)
    _, extracted = _extract_part(store, model, settings, env, name, new)
    seconds = time.perf_counter() - start
    if not env.is_main:
        return None
    whitening = read_whitening(index_dir / WHITENING) if (index_dir / WHITENING).is_file() else None
    before = meta["count"]
    meta["parts"] = [part for part in meta["parts"] if part != name] + [name]
    summary = write_index(index_dir, meta, whitening)
    return {**summary, "added": summary["count"] - before, "already": len(candidates) - len(new),
            "extracted": extracted, "seconds": seconds}


def _read_lines(path):
    return [line for line in Path(path).read_text().splitlines() if line] if Path(path).is_file() else []


def _write_lines(path, lines):
    atomic_write(path, lambda f: f.write("".join(line + "\n" for line in lines).encode()))


def assemble(features_dir, parts):
    """``(paths, descriptors, skipped)`` of the parts, in order: readable rows kept, each path once."""
    paths, rows, skipped = [], [], []
    for part in parts:
        part_paths = _read_lines(features_dir / f"{part}.txt")
        features = np.load(features_dir / f"{part}.npy")
        readable = ~np.isnan(features).any(axis=1)
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


def write_index(index_dir, meta, whitening):
    """Write the index files of ``meta``'s parts, index.json last; a summary dict."""
    paths, descriptors, skipped = assemble(index_dir / "features", meta["parts"])
    if not paths:
        raise InputError(f"none of the {len(skipped)} files could be read as an image (see {index_dir / SKIPPED})")
    save_array(index_dir / DESCRIPTORS, descriptors)
    _write_lines(index_dir / PATHS, paths)
    _write_lines(index_dir / SKIPPED, skipped)
    if whitening is not None:
        save_whitening(index_dir / WHITENING, whitening)
    else:
        (index_dir / WHITENING).unlink(missing_ok=True)
    settings = meta["settings"]
    kind = search_kind(settings["search"], len(paths))
    vectors = apply_whitening(whitening, descriptors, settings["whiten_power"])
    structure = search_structure(vectors, kind)
    atomic_write(index_dir / SEARCH, lambda f: f.write(faiss.serialize_index(structure).tobytes()))
    meta = {**meta, "count": len(paths), "skipped": len(skipped), "search": kind}
    save_json(index_dir / INDEX_FILE, meta)
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
        self.paths = _read_lines(self.dir / PATHS)
        if len(self.paths) != self.meta["count"]:
            raise InputError(f"--index {self.dir}: {PATHS} holds {len(self.paths)} paths, {INDEX_FILE} "
                             f"{self.meta['count']}: an interrupted build or add; run it again")
        stored = self.dir / WHITENING
        self.whitening = read_whitening(stored) if stored.is_file() else None
        self.power = self.settings.whiten_power
        if whiten_file is None and whiten_power in (None, self.power):
            self.structure = faiss.deserialize_index(np.fromfile(self.dir / SEARCH, dtype=np.uint8))
        else:
            if whiten_file is not None:
                self.whitening = check_dim(read_whitening(whiten_file), self.meta["dim"],
                                           f"--whiten-file {whiten_file}")
            self.power = self.power if whiten_power is None else whiten_power
            self.structure = self._rebuilt()
        self.model = load_for_extraction(self.settings.checkpoint, device)

    def _rebuilt(self):
        vectors = apply_whitening(self.whitening, np.load(self.dir / DESCRIPTORS), self.power)
        return search_structure(vectors, self.meta["search"])

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
    read_meta(index_dir)
    descriptors = np.load(Path(index_dir) / DESCRIPTORS)
    try:
        return PCAWhitening.fit(descriptors, dims)
    except ValueError as err:
        raise InputError(f"--index {index_dir}: {err}") from None
