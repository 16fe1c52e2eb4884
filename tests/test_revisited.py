import numpy as np
import pytest

from retrieval import revisited
from retrieval.revisited import PROTOCOLS, compute_map, format_results, protocol_gnd, revisited_map


def _hand_worked():
    """Four queries over a database of 6; every number below is worked out in the comments."""
    ranks = np.array([
        [3, 2, 0, 5],
        [0, 4, 1, 4],
        [5, 0, 2, 3],
        [1, 1, 3, 2],
        [4, 3, 4, 1],
        [2, 5, 5, 0],
    ])
    gnd = [
        # q0: positives 0, 1, 2 at positions 1, 3, 5; junk 5 at position 2 comes before the last two,
        # so the ranks are 1, 3 - 1 = 2, 5 - 1 = 4.
        # AP = [(0/1 + 1/2) + (1/2 + 2/3) + (2/4 + 3/5)] / 2 / 3 = (1/2 + 7/6 + 11/10) / 6 = 83/180.
        # 1-based ranks 2, 3, 5: P@1 = 0/1, P@2 = 1/2, P@5 = 3/5.
        {"ok": np.array([0, 1, 2]), "junk": np.array([5])},
        # q1: a single positive ranked first: AP = (1 + 1/1) / 2 = 1; P@k = 1/min(k, 1) = 1 for every k.
        {"ok": np.array([2]), "junk": np.array([], dtype=int)},
        # q2: no positives: AP and precisions NaN, left out of the means.
        {"ok": np.array([], dtype=int), "junk": np.array([0])},
        # q3: positives 3, 0 at positions 2, 5; junk 5, 4, 2 at positions 0, 1, 3. Ranks 2 - 2 = 0, 5 - 3 = 2.
        # AP = [(1 + 1/1) + (1/2 + 2/3)] / 2 / 2 = (2 + 7/6) / 4 = 19/24.
        # 1-based ranks 1, 3: P@1 = 1, P@2 = 1/2, P@5 = P@3 = 2/3.
        {"ok": np.array([3, 0]), "junk": np.array([5, 4, 2])},
    ]
    aps = np.array([83 / 180, 1.0, np.nan, 19 / 24])
    prs = np.array([[0, 1 / 2, 3 / 5], [1, 1, 1], [np.nan] * 3, [1, 1 / 2, 2 / 3]])
    return ranks, gnd, aps, prs


def test_compute_map_hand_worked():
    ranks, gnd, aps, prs = _hand_worked()
    mean_ap, got_aps, mean_pr, got_prs = compute_map(ranks, gnd, kappas=(1, 2, 5))
    np.testing.assert_allclose(got_aps, aps, rtol=1e-12)
    np.testing.assert_allclose(got_prs, prs, rtol=1e-12)
    assert mean_ap == pytest.approx((83 / 180 + 1 + 19 / 24) / 3, rel=1e-12)
    np.testing.assert_allclose(mean_pr, [(0 + 1 + 1) / 3, (1 / 2 + 1 + 1 / 2) / 3, (3 / 5 + 1 + 2 / 3) / 3])


def test_compute_map_truncated_ranking_and_missing_junk_key():
    # Positive 0 at position 1 of a 2-row ranking, positive 3 absent: AP = (0/1 + 1/2) / 2 / 2 = 1/8.
    # No positive in the ranking at all: AP 0, precision 0 (revisitop itself would fail on max([])).
    ranks = np.array([[1, 1], [0, 2]])
    mean_ap, aps, mean_pr, prs = compute_map(ranks, [{"ok": np.array([0, 3])}, {"ok": np.array([5])}], (1, 2))
    np.testing.assert_allclose(aps, [1 / 8, 0.0])
    np.testing.assert_allclose(prs, [[0, 1 / 2], [0, 0]])
    assert mean_ap == pytest.approx(1 / 16)


def test_compute_map_image_both_positive_and_junk_as_revisitop():
    # Ranking 0, 1; positives 0, 1; image 0 also junk. Junk only moves up positives strictly after it:
    # ranks 0 and 1 - 1 = 0, so AP = [(1 + 1) + (1 + 2/1)] / 2 / 2 = 5/4 (revisitop's own arithmetic).
    mean_ap, aps, _, _ = compute_map(np.array([[0], [1]]), [{"ok": np.array([0, 1]), "junk": np.array([0])}])
    assert aps.tolist() == [5 / 4]


def test_compute_map_without_any_positive_is_nan():
    mean_ap, aps, mean_pr, prs = compute_map(np.zeros((3, 1), int), [{"ok": np.array([], int)}], (1,))
    assert np.isnan(mean_ap) and np.isnan(aps).all() and np.isnan(mean_pr).all() and np.isnan(prs).all()


def test_protocols_partition_easy_hard_junk():
    gnd = [{"easy": [1, 2], "hard": [3], "junk": [4], "bbx": (0, 0, 1, 1)}]
    expected = {"easy": ([1, 2], [4, 3]), "medium": ([1, 2, 3], [4]), "hard": ([3], [4, 1, 2])}
    for protocol, (ok, junk) in expected.items():
        (got,) = protocol_gnd(gnd, protocol)
        assert got["ok"].tolist() == ok and got["junk"].tolist() == junk
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_gnd(gnd, "extreme")


def _random_gnd(rng, n, nq, overlap=False):
    gnd = []
    for _ in range(nq):
        labelled = rng.choice(n, int(rng.integers(0, min(n, 40) + 1)), replace=False)
        easy, hard, junk = np.split(labelled, np.sort(rng.integers(0, labelled.size + 1, 2)))
        if overlap and labelled.size:  # duplicates and shared indices: compute_map still defines the result
            hard = np.concatenate([hard, rng.choice(labelled, 2)])
        gnd.append({"easy": easy, "hard": hard, "junk": junk})
    return gnd


def _random_scores(rng, n, nq, kind):
    if kind == "ties":  # few distinct values, signed zeros among them
        return rng.choice(np.array([-1.0, -0.0, 0.0, 0.5, 1.0], np.float32), size=(n, nq))
    if kind == "rounded":  # many exact ties spread over a range
        return np.round(rng.normal(0.2, 0.1, (n, nq)), 3).astype(np.float32)
    if kind == "extreme":  # overflowing differences, infinities, subnormal-range values
        values = np.array([-np.inf, -1e308, -1.0, 0.0, 1e-310, 1.0, 1e308, np.inf])
        return rng.choice(values, size=(n, nq))
    if kind == "infinite":
        scores = rng.standard_normal((n, nq))
        scores[rng.random((n, nq)) < 0.05] = np.inf
        scores[rng.random((n, nq)) < 0.05] = -np.inf
        return scores
    return rng.standard_normal((n, nq)).astype(np.float32 if kind == "float32" else np.float64)


@pytest.mark.parametrize("buckets,row_block", [(revisited._BUCKETS, revisited._ROW_BLOCK), (8, 7)])
def test_revisited_map_equals_compute_map_on_full_argsort(monkeypatch, buckets, row_block):
    # A small bucket count and row block push many images into the items' buckets and across block edges.
    monkeypatch.setattr(revisited, "_BUCKETS", buckets)
    monkeypatch.setattr(revisited, "_ROW_BLOCK", row_block)
    rng = np.random.default_rng(0)
    kappas = (1, 3, 10)
    for case in range(120):
        n, nq = int(rng.integers(1, 400)), int(rng.integers(1, 5))
        kind = ["ties", "rounded", "extreme", "infinite", "float32", "float64"][case % 6]
        scores = _random_scores(rng, n, nq, kind)
        if case % 4 == 1:  # a transposed query x database product is Fortran-ordered
            scores = np.asfortranarray(scores)
        gnd = _random_gnd(rng, n, nq, overlap=case % 3 == 0)
        fast = revisited_map(scores, gnd, kappas)
        ranks = np.argsort(-scores, axis=0, kind="stable")
        for protocol in PROTOCOLS:
            mean_ap, aps, mean_pr, prs = compute_map(ranks, protocol_gnd(gnd, protocol), kappas)
            got = fast[protocol]
            assert np.array_equal(got["aps"], aps, equal_nan=True), (case, protocol)
            assert np.array_equal(got["prs"], prs, equal_nan=True), (case, protocol)
            assert np.array_equal(got["map"], mean_ap, equal_nan=True)
            assert np.array_equal(got["mp"], mean_pr, equal_nan=True)


def test_revisited_map_ties_follow_database_order():
    # All scores equal: the ranking is the database order 0, 1, 2, 3. Medium positives 1 and 3 at ranks 1, 3:
    # AP = [(0/1 + 1/2) + (1/3 + 2/4)] / 2 / 2 = 1/3. Hard positive 3, easy 1 ignored: rank 2, AP = (0 + 1/3)/2.
    gnd = [{"easy": [1], "hard": [3], "junk": []}]
    result = revisited_map(np.ones((4, 1), np.float32), gnd)
    assert result["medium"]["map"] == pytest.approx(1 / 3)
    assert result["hard"]["map"] == pytest.approx(1 / 6)
    assert result["easy"]["map"] == pytest.approx((0 + 1 / 2) / 2)


def test_revisited_map_rejects_bad_input():
    gnd = [{"easy": [0], "hard": [], "junk": []}]
    with pytest.raises(ValueError, match="NaN"):
        revisited_map(np.array([[0.5], [np.nan]]), gnd)
    with pytest.raises(ValueError, match="n_db x 1"):
        revisited_map(np.zeros((3, 2)), gnd)
    with pytest.raises(ValueError, match="outside the database"):
        revisited_map(np.zeros((3, 1)), [{"easy": [3], "hard": [], "junk": []}])


def test_format_results():
    results = {p: {"map": m, "mp": np.array(mp)} for p, m, mp in
               [("easy", 0.8481, [0.9706, 0.92059, 0.8649]), ("medium", 0.6467, [1.0, 0.9, 0.8]),
                ("hard", 0.38474, [0.81429, 0.63, 0.53])]}
    assert format_results("roxford5k", results).splitlines() == [
        ">> Test Dataset: roxford5k",
        ">> mAP Easy: 84.81, Medium: 64.67, Hard: 38.47",
        ">> mP@k[1, 5, 10] Easy: [97.06, 92.06, 86.49], Medium: [100.00, 90.00, 80.00], Hard: [81.43, 63.00, 53.00]",
    ]
