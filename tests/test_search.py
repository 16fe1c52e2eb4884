"""Exact and product-quantised search, the ranking that evaluation sees, alpha-QE and DBA on hand-made vectors."""

import faiss
import numpy as np
import pytest

from retrieval import search
from retrieval.revisited import compute_map, protocol_gnd, revisited_map
from retrieval.search import ExactSearch, PQSearch, alpha_qe, dba, top_k, weighted_expansion


def unit_rows(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_scores_over_parts_and_blocks(monkeypatch):
    monkeypatch.setattr(search, "BLOCK_ROWS", 7)
    db, queries = unit_rows(50, 16, 0), unit_rows(4, 16, 1)
    index = ExactSearch([db[:23], db[23:]])
    np.testing.assert_allclose(index.scores(queries), db @ queries.T, atol=1e-6)
    assert index.n == 50 and index.bytes_per_image == 64 and index.memory_bytes == 50 * 64
    sims, ids = index.search(queries, 5)
    np.testing.assert_array_equal(ids, np.argsort(-(db @ queries.T), axis=0)[:5].T)
    np.testing.assert_allclose(sims, np.take_along_axis(queries @ db.T, ids, axis=1), atol=1e-6)
    np.testing.assert_array_equal(index.vectors(ids), db[ids])
    np.testing.assert_array_equal(index.all(), db)


def test_top_k_is_sorted_and_capped_by_the_database():
    scores = np.array([[0.1, 0.9], [0.7, -0.2], [0.3, 0.5]], dtype=np.float32)
    sims, ids = top_k(scores, 5)
    np.testing.assert_array_equal(ids, [[1, 2, 0], [0, 2, 1]])
    np.testing.assert_allclose(sims, [[0.7, 0.3, 0.1], [0.9, 0.5, -0.2]])


def test_pq_scores_every_image_by_its_reconstruction():
    db, queries = unit_rows(600, 32, 2), unit_rows(5, 32, 3)
    index = PQSearch([db[:250], db[250:]], m=8, nbits=8)
    assert index.label == "pq8x8" and index.bytes_per_image == 8
    assert index.memory_bytes == 600 * 8 + 256 * 32 * 4  # codes + codebooks
    reconstructed = index.index.reconstruct_n(0, 600)  # independent of the search: decoded codes
    expected = reconstructed @ queries.T
    scores = index.scores(queries)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # the ranking evaluation sees is the one of the reconstructions, up to float ties
    for q in range(len(queries)):
        order = np.argsort(-scores[:, q], kind="stable")
        assert np.all(np.diff(expected[order, q]) <= 1e-5)
    sims, ids = index.search(queries, 10)
    np.testing.assert_allclose(sims, np.take_along_axis(expected.T, ids, axis=1), atol=1e-5)
    assert not np.allclose(scores, db @ queries.T, atol=1e-3)  # it is quantised


def test_ivf_pq_scores_only_the_visited_cells_and_ranks_the_rest_last():
    db, queries = unit_rows(800, 16, 4), unit_rows(3, 16, 5)
    index = PQSearch([db], m=4, nbits=4, nlist=8, nprobe=2)
    assert index.label == "ivf8-pq4x4-nprobe2" and index.bytes_per_image == 2 + 8
    assert index.memory_bytes == 800 * 10 + 16 * 16 * 4 + 8 * 16 * 4  # codes and ids, codebooks, centroids
    scores = index.scores(queries)
    _, cells = index.quantizer.search(queries, 2)
    invlists = index.index.invlists
    for q in range(len(queries)):
        visited = np.concatenate([faiss.rev_swig_ptr(invlists.get_ids(int(c)), invlists.list_size(int(c))).copy()
                                  for c in cells[q]])
        assert set(np.flatnonzero(np.isfinite(scores[:, q]))) == set(visited.tolist())
        sims, ids = index.index.search(queries[q:q + 1], 800)
        found = ids[0] >= 0
        np.testing.assert_array_equal(scores[ids[0][found], q], sims[0][found])
    assert np.isneginf(scores).any()


def test_unscored_images_rank_after_the_scored_ones_in_database_order():
    scores = np.array([[0.2, -np.inf], [-np.inf, 0.3], [0.9, -np.inf], [-np.inf, -np.inf], [0.1, 0.4]],
                      dtype=np.float32)
    gnd = [{"easy": [3], "hard": [0], "junk": [1]}, {"easy": [2, 4], "hard": [], "junk": [0]}]
    got = revisited_map(scores, gnd)
    ranks = np.argsort(-scores, axis=0, kind="stable")
    np.testing.assert_array_equal(ranks[:, 0], [2, 0, 4, 1, 3])
    for protocol in ("easy", "medium", "hard"):
        expected = compute_map(ranks, protocol_gnd(gnd, protocol), (1, 5, 10))
        assert got[protocol]["map"] == pytest.approx(expected[0])
        np.testing.assert_allclose(got[protocol]["mp"], expected[2])


def test_pq_needs_enough_training_images_and_a_dividing_m():
    with pytest.raises(ValueError, match="at least 256 database images"):
        PQSearch([unit_rows(100, 16, 0)], m=4)
    with pytest.raises(ValueError, match="do not divide"):
        PQSearch([unit_rows(300, 16, 0)], m=5)


def test_alpha_qe_by_hand():
    # query e1; database e1 (sim 1), (e1 + e2)/sqrt 2 (sim 1/sqrt 2), e2 (sim 0), -e1 (sim -1)
    r = 2 ** -0.5
    db = np.array([[1, 0], [r, r], [0, 1], [-1, 0]], dtype=np.float32)
    query = np.array([[1, 0]], dtype=np.float32)
    # top-2: e1 with weight 1^3 and (r, r) with weight r^3: q' = e1 + e1 + r^3 (r, r), normalised
    v = np.array([2 + r ** 4, r ** 4])
    np.testing.assert_allclose(alpha_qe(query, ExactSearch([db]), top_n=2, alpha=3), [v / np.linalg.norm(v)],
                               atol=1e-6)
    # alpha 0: plain average of the query and its neighbours
    v = np.array([2 + r, r])
    np.testing.assert_allclose(alpha_qe(query, ExactSearch([db]), top_n=2, alpha=0), [v / np.linalg.norm(v)],
                               atol=1e-6)


def test_negative_similarities_weigh_nothing():
    out = weighted_expansion(np.array([[1.0, 0.0]]), np.array([[[0.0, 1.0], [-1.0, 0.0]]]),
                             np.array([[0.5, -1.0]]), alpha=3)
    v = np.array([1.0, 0.125])
    np.testing.assert_allclose(out, [v / np.linalg.norm(v)], atol=1e-7)


def test_dba_by_hand():
    # a = e1, b = (cos 0.3, sin 0.3), c = e2: b's nearest others are a (cos 0.3) then c (sin 0.3)
    s, c = np.sin(0.3), np.cos(0.3)
    db = np.array([[1, 0], [c, s], [0, 1]], dtype=np.float32)
    out = dba(db, top_n=1, alpha=3)
    expected = [db[0] + c ** 3 * db[1], db[1] + c ** 3 * db[0], db[2] + s ** 3 * db[1]]
    expected = np.array([v / np.linalg.norm(v) for v in expected])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # top_n 2: every other vector, never the vector itself twice; blocks of one row give the same
    out = dba(db, top_n=2, alpha=1, block_bytes=1)
    v = db[1] + c * db[0] + s * db[2]
    np.testing.assert_allclose(out[1], v / np.linalg.norm(v), atol=1e-6)
    np.testing.assert_allclose(dba(db[:1], top_n=2), db[:1])  # a single vector has no neighbours
