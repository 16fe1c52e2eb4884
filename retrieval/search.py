"""Search a database of L2-normalised descriptors: exact inner product, faiss PQ and IVF-PQ, alpha-QE and DBA.

Every search structure gives the score matrix that ``retrieval.revisited.revisited_map`` ranks (``scores``: n_db x
n_queries, higher is better) and a top-k search (``search``), the operation timed as the search time. Memory is what
the database takes in it: ``bytes_per_image`` for each image plus codebooks and coarse centroids.

- ``ExactSearch``: float32 vectors (4 bytes x d per image, 4096 for d = 1024), scored by matrix products over
  blocks of database rows, so that no temporary grows with the database beyond the scores themselves.
- ``PQSearch``: faiss product quantisation, ``m`` sub-quantisers of ``nbits`` bits (``m`` bytes per image at 8
  bits), scores by asymmetric distance computation (the query against the code's reconstruction).
  Flat PQ scores every database image: ``scores`` asks faiss for all ``n_db`` neighbours. IVF-PQ (``nlist``
  coarse cells, ``nprobe`` visited) scores only the images of the visited cells, as it does when searching;
  the others get ``-inf``, i.e. come after every scored image, in database order (the stable order of
  ``revisited_map``). Its codes carry an 8-byte id each.
- ``CompressedSearch``: any faiss code (``"SQ8"``, ``"SQfp16"``, ``"PQ64"``...), flat or in ``nlist`` IVF cells,
  optionally over the descriptors projected onto their ``dims`` leading principal directions. The directions are
  those of the uncentred second moment, so that the projection is orthonormal and keeps inner products up to
  the dropped components (a centred PCA would rank by ``(q - mean) . (x - mean)``, which is not the same
  ranking). ``R1M_COMPRESSED`` is the configuration for 1M images chosen by ``python -m benchmarks.search``
  (docs/benchmarks.md has its measurements): 120 directions, IVF1024 (128 visited), 8-bit scalar quantisation, i.e.
  128 bytes per image (120 codes + an 8-byte id).
- ``alpha_qe`` and ``dba`` (Radenovic et al., TPAMI 2019): a vector is replaced by the L2-normalised sum of
  itself and its ``top_n`` nearest database vectors, weighted by similarity^alpha; alpha-QE on the queries at
  search time, DBA on every database vector beforehand (its neighbours excluding itself).
"""

import faiss
import numpy as np
import torch

ALPHA = 3.0
TOP_N = 2
TOP_K = 100  # results a search returns, the operation whose time is reported
BLOCK_ROWS = 65536  # database rows scored at a time
TRAIN_SIZE = 100_000  # database vectors sampled to train PQ (faiss samples 256 per centroid at most anyway)
RESULT_BYTES = 1 << 28  # faiss results held at once when scoring every database image


def _blocks(parts, rows=BLOCK_ROWS):
    """``(first row, block)`` over the rows of a list of arrays, in order."""
    offset = 0
    for part in parts:
        for start in range(0, len(part), rows):
            yield offset + start, part[start:start + rows]
        offset += len(part)


def top_k(scores, k):
    """Sorted ``(similarities, ids)`` of the ``k`` best database items per query, both (n_queries, k)."""
    values, ids = torch.from_numpy(scores).topk(min(k, len(scores)), dim=0)
    return values.T.numpy(), ids.T.numpy()


class ExactSearch:
    """Float32 descriptors, kept as given (a list of arrays whose rows follow one another)."""

    def __init__(self, parts, label="exact"):
        self.label = label
        self.parts = [np.ascontiguousarray(part, dtype=np.float32) for part in parts]
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])
        self.n, self.dim = int(self.offsets[-1]), self.parts[0].shape[1]
        self.bytes_per_image = 4 * self.dim
        self.memory_bytes = self.n * self.bytes_per_image

    def scores(self, queries):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        out = np.empty((self.n, len(queries)), dtype=np.float32)
        for start, block in _blocks(self.parts):
            np.matmul(block, queries.T, out=out[start:start + len(block)])
        return out

    def search(self, queries, k=TOP_K):
        return top_k(self.scores(queries), k)

    def vectors(self, ids):
        """The database vectors of ``ids`` (any shape), shape ``ids.shape + (dim,)``."""
        flat = np.asarray(ids).ravel()
        part = np.searchsorted(self.offsets, flat, side="right") - 1
        rows = [self.parts[p][i - self.offsets[p]] for p, i in zip(part, flat, strict=True)]
        return np.asarray(rows, dtype=np.float32).reshape(*np.shape(ids), self.dim)

    def all(self):
        return np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]


def _sample(parts, size, seed):
    """``size`` database rows drawn without replacement (seeded), in database order."""
    total = sum(len(part) for part in parts)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size, replace=False))
    out, offset = [], 0
    for part in parts:
        here = chosen[(chosen >= offset) & (chosen < offset + len(part))] - offset
        out.append(part[here])
        offset += len(part)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


class PQSearch:
    """faiss ``IndexPQ`` (``nlist`` None) or ``IndexIVFPQ`` on inner products, trained on a sample of the
    database (at most ``train_size`` vectors) and holding the codes of all of it."""

    def __init__(self, parts, m, nbits=8, nlist=None, nprobe=16, train_size=TRAIN_SIZE, seed=0):
        self.n, dim = sum(len(part) for part in parts), parts[0].shape[1]
        if dim % m:
            raise ValueError(f"PQ: {m} sub-quantisers do not divide the descriptor size {dim}")
        needed = max(2 ** nbits, nlist or 0)
        if min(self.n, train_size) < needed:
            raise ValueError(f"PQ with {nbits}-bit codes{f' and {nlist} cells' if nlist else ''} needs at least "
                             f"{needed} database images to train, the database has {self.n}")
        if nlist:
            self.quantizer = faiss.IndexFlatIP(dim)
            self.index = faiss.IndexIVFPQ(self.quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
            self.index.nprobe = nprobe
            self.label = f"ivf{nlist}-pq{m}x{nbits}-nprobe{nprobe}"
            self.bytes_per_image = self.index.code_size + 8
            overhead = nlist * dim * 4
        else:
            self.index = faiss.IndexPQ(dim, m, nbits, faiss.METRIC_INNER_PRODUCT)
            self.label = f"pq{m}x{nbits}"
            self.bytes_per_image = self.index.code_size
            overhead = 0
        self.index.train(_sample(parts, min(self.n, train_size), seed))
        for _, block in _blocks(parts):
            self.index.add(np.ascontiguousarray(block, dtype=np.float32))
        codebooks = 2 ** nbits * dim * 4
        self.memory_bytes = self.n * self.bytes_per_image + codebooks + overhead

    def scores(self, queries):
        """The index's score of every database image for every query; ``-inf`` for the images IVF-PQ does not
        visit."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        out = np.full((self.n, len(queries)), -np.inf, dtype=np.float32)
        step = max(1, RESULT_BYTES // (12 * self.n))
        for start in range(0, len(queries), step):
            sims, ids = self.index.search(queries[start:start + step], self.n)
            for column, (row_sims, row_ids) in enumerate(zip(sims, ids, strict=True), start):
                found = row_ids >= 0
                out[row_ids[found], column] = row_sims[found]
        return out

    def search(self, queries, k=TOP_K):
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.n))


# the compressed search of test.py --r1m: chosen by python -m benchmarks.search (docs/benchmarks.md)
R1M_COMPRESSED = {"codec": "SQ8", "dims": 120, "nlist": 1024, "nprobe": 128}
MIN_POINTS_PER_CELL = 39  # faiss's k-means wants at least this many training vectors per IVF cell


def principal_directions(vectors, dims):
    """The ``dims`` leading eigenvectors of the uncentred second moment ``x^T x / n`` of ``vectors`` (n, d), as
    the rows of a (dims, d) float32 matrix: an orthonormal projection that keeps the inner products of
    descriptors up to what the other directions hold."""
    x = np.asarray(vectors, dtype=np.float64)
    _, vecs = np.linalg.eigh(x.T @ x / len(x))
    return np.ascontiguousarray(vecs[:, ::-1][:, :dims].T, dtype=np.float32)


class CompressedSearch:
    """A faiss index of ``codec`` codes (an ``index_factory`` code: ``"SQ8"``, ``"SQfp16"``, ``"PQ64"``...) on
    inner products: flat, or in ``nlist`` IVF cells of which ``nprobe`` are visited; with ``dims``, over the
    descriptors projected onto their ``dims`` leading principal directions (``principal_directions``).

    The projection, the cells and the codes are trained on a sample of at most ``train_size`` database vectors.
    A database too small for ``nlist`` cells gets fewer (at least ``MIN_POINTS_PER_CELL`` training vectors a
    cell); ``dims`` at or above the descriptor size means no projection. Scores: those of the codes, ``-inf`` for
    the images of unvisited cells (as ``PQSearch``).
    """

    def __init__(self, parts, codec="SQ8", dims=None, nlist=None, nprobe=16, train_size=TRAIN_SIZE, seed=0):
        self.n, dim = sum(len(part) for part in parts), parts[0].shape[1]
        sample = _sample(parts, min(self.n, train_size), seed)
        self.dims = dims if dims is not None and dims < dim else None
        inner_dim = self.dims or dim
        self.nlist = max(1, min(nlist, len(sample) // MIN_POINTS_PER_CELL)) if nlist else None
        factory = f"IVF{self.nlist},{codec}" if self.nlist else codec
        try:
            inner = faiss.index_factory(inner_dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1].split("failed: ")[-1]
            raise ValueError(f"faiss cannot build {factory!r} on {inner_dim} dimensions: {reason}") from None
        if self.dims:
            projection = principal_directions(sample, self.dims)
            transform = faiss.LinearTransform(dim, self.dims, False)
            faiss.copy_array_to_vector(projection.ravel(), transform.A)
            transform.is_trained = True
            self.index = faiss.IndexPreTransform(transform, inner)
            self._keep = (transform, inner)  # the Python objects own what the C++ index points to
        else:
            self.index = inner
        ivf = faiss.try_extract_index_ivf(self.index) if self.nlist else None
        needed = 2 ** getattr(getattr(ivf or inner, "pq", None), "nbits", 0) if "PQ" in codec else 1
        if len(sample) < max(needed, self.nlist or 1):
            raise ValueError(f"{codec} needs at least {needed} database images to train, the database has {self.n}")
        self.index.train(sample)
        for _, block in _blocks(parts):
            self.index.add(np.ascontiguousarray(block, dtype=np.float32))
        self.codec = codec.lower()
        self.bytes_per_image = inner.code_size + (8 if self.nlist else 0)
        self.memory_bytes = len(faiss.serialize_index(self.index))
        self.nprobe = nprobe

    @property
    def nprobe(self):
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value):
        self._nprobe = min(value, self.nlist) if self.nlist else None
        if self.nlist:
            faiss.extract_index_ivf(self.index).nprobe = self._nprobe

    @property
    def label(self):
        parts = [f"pca{self.dims}"] if self.dims else []
        parts += [f"ivf{self.nlist}"] if self.nlist else []
        parts += [self.codec] + ([f"nprobe{self.nprobe}"] if self.nlist else [])
        return "-".join(parts)

    scores = PQSearch.scores
    search = PQSearch.search


def weighted_expansion(vectors, neighbours, sims, alpha=ALPHA):
    """``normalize(v + sum_j max(s_j, 0)^alpha n_j)`` for vectors (n, d), neighbours (n, k, d), sims (n, k).

    A vector's own weight is 1, its similarity with itself; negative similarities weigh nothing.
    """
    weights = np.clip(sims, 0, None) ** alpha
    out = vectors + np.einsum("nk,nkd->nd", weights, neighbours)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def alpha_qe(queries, index, top_n=TOP_N, alpha=ALPHA):
    """alpha-QE: each query expanded with its ``top_n`` nearest database vectors in ``index`` (an
    ``ExactSearch``)."""
    sims, ids = index.search(queries, top_n)
    return weighted_expansion(queries, index.vectors(ids), sims, alpha)


def dba(database, top_n=TOP_N, alpha=ALPHA, device="cpu", block_bytes=1 << 28):
    """Database-side augmentation: every vector expanded with its ``top_n`` nearest other database vectors.

    The neighbours are found by exact search on ``device`` (a GPU makes the 1M x 1M search of R1M practical),
    in blocks of rows whose similarities take at most ``block_bytes``.
    """
    database = np.ascontiguousarray(database, dtype=np.float32)
    n = len(database)
    vectors = torch.from_numpy(database).to(device)
    out = np.empty_like(database)
    rows = max(1, block_bytes // (4 * n))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        sims = vectors[start:stop] @ vectors.T
        sims[torch.arange(stop - start), torch.arange(start, stop)] = -torch.inf
        top, ids = sims.topk(min(top_n, n - 1), dim=1)
        out[start:stop] = weighted_expansion(database[start:stop], database[ids.cpu().numpy()], top.cpu().numpy(),
                                             alpha)
    return out
