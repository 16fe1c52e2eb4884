"""ASMK search of local features (test.py --local-features asmk) through the ``asmk`` package, the reference
implementation whose numbers HOW and the Token paper report (PyPI asmk 0.1.1).

Settings (HOW's, docs/evaluation.md, "Local features"): binary residuals (ASMK*), multiple assignment 1 for the
database and 5 for the queries, selectivity alpha 3 and threshold tau 0, no IDF, every database image ranked;
the codebook is given (``retrieval.codebook``). The package's rules for image ids are kept here: the rows of an
image are contiguous and their ids do not decrease; database ids are 0 .. N-1, in database order, so that the
returned score vector lines up with the ground truth. An image without local features has no rows: it is in no
posting list and scores 0 for every query.

The inverted file is built in chunks of ``CHUNK_IMAGES`` images (the package's ``IvfBuilder.add``, ids
increasing from chunk to chunk), so that only one chunk's quantisation and aggregation are in memory beside the
inverted file itself.

``ASMKSearch`` looks like the global searches of ``retrieval.search`` to the evaluation: ``scores`` (n_db x
n_queries), ``search`` (top k), ``label``, ``bytes_per_image`` and ``memory_bytes``; its queries are lists of
per-image local-feature arrays.
"""

from dataclasses import dataclass

import numpy as np

from retrieval.search import top_k
from utils.errors import InputError

INSTALL = ("the ASMK search needs the asmk package: pip install asmk==0.1.1 (after faiss-cpu; it builds a C "
           "extension, so a C compiler must be there), or make setup")
CHUNK_IMAGES = 1000  # database images quantised and aggregated at a time


@dataclass(frozen=True)
class ASMKParams:
    """HOW's ASMK settings, one field per test.py flag."""

    binary: bool = True
    ma_db: int = 1  # words each database feature is assigned to
    ma_query: int = 5  # words each query feature is assigned to
    alpha: float = 3.0
    tau: float = 0.0
    words: int = 65536  # codebook size (trained codebooks; a given one has its own)

    def package_params(self):
        """The params dict of ``asmk.ASMKMethod``."""
        return {"index": {"gpu_id": None},
                "train_codebook": {"codebook": {"size": self.words}},
                "build_ivf": {"kernel": {"binary": self.binary}, "ivf": {"use_idf": False},
                              "quantize": {"multiple_assignment": self.ma_db}, "aggregate": {}},
                "query_ivf": {"quantize": {"multiple_assignment": self.ma_query}, "aggregate": {},
                              "search": {"topk": None},
                              "similarity": {"similarity_threshold": self.tau, "alpha": self.alpha}}}


def asmk_package():
    """The ``asmk`` package; a one-line ``InputError`` saying how to install it when it is missing."""
    try:
        import asmk
    except ImportError:
        raise InputError(INSTALL) from None
    return asmk


def stacked(images, first_id=0):
    """``(vectors, ids)`` of a list of per-image (n_i, d) arrays: their rows stacked as float32, and the image id
    of each row (``first_id``, ``first_id + 1``, ... in list order: contiguous and increasing, as the package
    wants); images without rows leave their id unused."""
    counts = [len(features) for features in images]
    ids = np.repeat(np.arange(first_id, first_id + len(images), dtype=np.int64), counts)
    vectors = np.concatenate(images) if images else np.zeros((0, 0))
    return np.ascontiguousarray(vectors, dtype=np.float32), ids


class ASMKSearch:
    """An ASMK inverted file of the database ``parts`` (lists of per-image local-feature arrays, in database
    order) over ``centroids`` (K, d)."""

    def __init__(self, centroids, parts, params=ASMKParams(), chunk_images=CHUNK_IMAGES):
        asmk = asmk_package()
        self.params = params
        self.label = "asmk"
        cdb = asmk.codebook.Codebook(asmk.index.initialize_index(None), size=len(centroids))
        cdb.index(np.ascontiguousarray(centroids, dtype=np.float32))
        method = asmk.ASMKMethod(params.package_params(), {}, codebook=cdb)
        builder = method.create_ivf_builder()
        self.n = 0
        for part in parts:
            for start in range(0, len(part), chunk_images):
                chunk = part[start:start + chunk_images]
                vectors, ids = stacked(chunk, self.n)
                if len(vectors):
                    builder.add(vectors, ids)
                self.n += len(chunk)
        self.method = method.add_ivf_builder(builder)
        ivf = self.method.inverted_file
        self.memory_bytes = sum(vecs[:count].nbytes + imids[:count].nbytes
                                for vecs, imids, count in zip(ivf.ivf_vecs, ivf.ivf_image_ids, ivf.counts,
                                                              strict=True) if vecs is not None)
        self.memory_bytes += np.asarray(ivf.norm_factor).nbytes
        self.bytes_per_image = round(self.memory_bytes / max(1, self.n))

    def scores(self, queries):
        """ASMK scores (n_db, n_queries) of the queries (a list of per-image arrays); 0 for a database image that
        shares no word with the query, and for every image of a query without features."""
        out = np.zeros((self.n, len(queries)))
        vectors, ids = stacked(queries)
        if not len(vectors):
            return out
        _, query_ids, ranks, scores = self.method.query_ivf(vectors, ids)
        for q, row_ranks, row_scores in zip(query_ids, ranks, scores, strict=True):
            out[row_ranks, q] = row_scores
        return out

    def search(self, queries, k=100):
        return top_k(self.scores(queries), k)

    def entries(self):
        """The inverted file's content, ``(word ids, packed residuals, image ids)`` sorted by image then word:
        what the database images were aggregated to."""
        ivf = self.method.inverted_file
        words, vecs, imids = [], [], []
        for word, (w_vecs, w_imids, count) in enumerate(zip(ivf.ivf_vecs, ivf.ivf_image_ids, ivf.counts,
                                                             strict=True)):
            if count:
                words.append(np.full(count, word))
                vecs.append(w_vecs[:count])
                imids.append(w_imids[:count])
        words, vecs, imids = np.concatenate(words), np.concatenate(vecs), np.concatenate(imids)
        order = np.lexsort((words, imids))
        return words[order], vecs[order], imids[order]
