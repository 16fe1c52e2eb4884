"""Revisited Oxford and Paris evaluation: mAP and mean precision@k under the Easy, Medium and Hard protocols.

The protocol is the one of the revisitop benchmark (Radenovic et al., CVPR 2018), summarised in docs/FACTS.md,
"Evaluation protocol":

- the database is ranked by descending score, ties broken by database index (a stable sort of ``-scores``);
- each protocol names the positives and the ignored ("junk") images of a query; ignored images are taken out
  of the ranking before anything is measured;
- AP is the trapezoid rule over the positives' 0-based ranks ``r_i`` (``i = 0, 1, ...``):
  ``sum_i (p0 + p1) / 2 / npos`` with ``p0 = 1 if r_i = 0 else i / r_i`` and ``p1 = (i + 1) / (r_i + 1)``;
- precision@k is measured within the first ``min(k, 1-based rank of the last positive)`` results;
- a query without positives is left out of both means.

``compute_map`` takes a full ranking, as revisitop's function of the same name does. ``revisited_map`` takes the
score matrix and never sorts the database: it finds the positions of the few labelled images of each query
directly (see ``_stable_positions``), which is what makes the 1M-distractor evaluation cheap.
"""

import numpy as np

PROTOCOLS = ("easy", "medium", "hard")
KAPPAS = (1, 5, 10)

_BUCKETS = 1 << 16  # score buckets per query, the range of uint16
_ROW_BLOCK = 8192  # database rows quantised at a time, so that a block stays in cache


def _ap_and_precisions(ranks, npos, kappas):
    """AP and precision@k of one query from the sorted 0-based ranks of its positives, junk already removed.

    ``npos`` is the number of positives the ground truth lists (positives missing from a truncated ranking
    lower the recall). A query whose positives were all missing gets AP 0 and precision 0.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return 0.0, np.zeros(len(kappas))
    i = np.arange(ranks.size, dtype=np.float64)
    p0 = np.divide(i, ranks, out=np.ones_like(ranks), where=ranks > 0)
    p1 = (i + 1) / (ranks + 1)
    ap = float(((p0 + p1) / 2).sum() / npos)
    one_based = ranks + 1
    cut = np.minimum(one_based[-1], np.asarray(kappas, dtype=np.float64))
    precisions = (one_based[None, :] <= cut[:, None]).sum(axis=1) / cut
    return ap, precisions


def _summarise(per_query, kappas):
    """Stack per-query ``(ap, precisions)`` (``None`` for a query without positives) into revisitop's outputs."""
    nq = len(per_query)
    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(kappas)), np.nan)
    for q, result in enumerate(per_query):
        if result is not None:
            aps[q], prs[q] = result
    counted = ~np.isnan(aps)
    if not counted.any():
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return float(aps[counted].mean()), aps, prs[counted].mean(axis=0), prs


def compute_map(ranks, gnd, kappas=()):
    """mAP and mP@k of rankings, with revisitop's signature and semantics.

    Args:
        ranks: n x n_queries array of 0-based database indices; column ``q`` is the ranking for query ``q``,
            best first. It may be truncated (fewer rows than the database).
        gnd: one dict per query with ``'ok'`` (positives) and optionally ``'junk'`` (ignored) index arrays.
        kappas: the k of precision@k.

    Returns:
        ``(map, aps, pr, prs)``: the mean AP, the per-query APs, the mean precisions at ``kappas`` and the
        per-query precisions (n_queries x len(kappas)). A query without positives has AP and precisions NaN
        and is left out of the means (all NaN when no query has positives). Positives that the ranking does
        not contain still count in the AP's denominator.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(f"ranks must be n x {len(gnd)} (one column per query), got shape {ranks.shape}")
    per_query = []
    for q, qgnd in enumerate(gnd):
        ok = np.asarray(qgnd["ok"]).ravel()
        if ok.size == 0:
            per_query.append(None)
            continue
        junk = np.asarray(qgnd.get("junk", ())).ravel()
        positions = np.flatnonzero(np.isin(ranks[:, q], ok))
        junk_positions = np.flatnonzero(np.isin(ranks[:, q], junk))
        per_query.append(_ranked_without_junk(positions, junk_positions, ok.size, kappas))
    return _summarise(per_query, kappas)


def _ranked_without_junk(positions, junk_positions, npos, kappas):
    """AP and precisions from the sorted ranking positions of the positives and of the ignored images."""
    ranks = positions - np.searchsorted(junk_positions, positions, side="left")
    return _ap_and_precisions(ranks, npos, kappas)


def protocol_gnd(gnd, protocol):
    """The ``{'ok', 'junk'}`` ground truth of one protocol from revisitop's ``easy``/``hard``/``junk`` lists.

    Easy: positives easy, ignored junk + hard. Medium: positives easy + hard, ignored junk.
    Hard: positives hard, ignored junk + easy.
    """
    def cat(q, *keys):
        return np.concatenate([np.asarray(q[key], dtype=np.int64).ravel() for key in keys])

    if protocol == "easy":
        return [{"ok": cat(q, "easy"), "junk": cat(q, "junk", "hard")} for q in gnd]
    if protocol == "medium":
        return [{"ok": cat(q, "easy", "hard"), "junk": cat(q, "junk")} for q in gnd]
    if protocol == "hard":
        return [{"ok": cat(q, "hard"), "junk": cat(q, "junk", "easy")} for q in gnd]
    raise ValueError(f"unknown protocol {protocol!r}: expected one of {PROTOCOLS}")


def _quantiser(values):
    """``(lo, scale)`` mapping the finite ``values`` of one query onto buckets ``1 .. _BUCKETS - 2``.

    ``scale`` is kept positive and finite in the scores' dtype, so that ``(s - lo) * scale`` is never NaN.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    scale = (_BUCKETS - 3) / (hi - lo) if hi > lo else 1.0
    return lo, float(np.clip(scale, np.finfo(values.dtype).tiny, 1e30))


def _stable_positions(scores, items):
    """Positions of database items in each query's ranking, without sorting the database.

    ``items[q]`` holds sorted unique database indices; the result holds, for each, its 0-based position in
    ``np.argsort(-scores[:, q], kind="stable")``: the number of items scoring higher, plus those scoring the
    same with a lower index.

    Every score is mapped to one of ``_BUCKETS`` buckets by ``clip((s - lo) * scale + 1)``, a non-decreasing
    function, with ``lo`` and ``scale`` spreading the query's item scores over the buckets. An item's position
    is then the number of database images in higher buckets that share no bucket with an item (one histogram
    gives it) plus its exact position among the images that do share one (few: they are gathered and sorted).
    Equal scores always fall in one bucket, so ties are resolved exactly as the stable sort resolves them.
    Working memory: the buckets, 2 bytes per score.
    """
    n, nq = scores.shape
    dtype = scores.dtype
    params = np.array([_quantiser(scores[idx, q]) for q, idx in enumerate(items)], dtype=dtype).reshape(nq, 2)
    lo, scale = params[:, 0], params[:, 1]

    buckets = np.empty((nq, n), dtype=np.uint16)
    z = np.empty((min(n, _ROW_BLOCK), nq), dtype=dtype)
    for start in range(0, n, _ROW_BLOCK):
        block = scores[start:start + _ROW_BLOCK]
        zb = z[:len(block)]
        with np.errstate(over="ignore"):  # far-off scores overflow to +-inf: the end buckets, as they should
            np.subtract(block, lo, out=zb)
            zb *= scale
        zb += 1
        np.clip(zb, 0, _BUCKETS - 1, out=zb)
        if np.isnan(zb).any():
            raise ValueError("scores contain NaN")
        buckets[:, start:start + len(block)] = zb.T

    positions = []
    for q, idx in enumerate(items):
        qbuckets = buckets[q]
        item_buckets = qbuckets[idx]
        shared = np.zeros(_BUCKETS, dtype=bool)
        shared[item_buckets] = True
        candidates = np.flatnonzero(np.take(shared, qbuckets))
        counts = np.bincount(qbuckets, minlength=_BUCKETS)
        counts[shared] = 0
        others_above = counts[::-1].cumsum()[::-1] - counts
        order = np.argsort(-scores[candidates, q], kind="stable")
        rank_among_candidates = np.empty(len(candidates), dtype=np.int64)
        rank_among_candidates[order] = np.arange(len(candidates))
        positions.append(rank_among_candidates[np.searchsorted(candidates, idx)] + others_above[item_buckets])
    return positions


def revisited_map(scores, gnd, kappas=KAPPAS):
    """Easy, Medium and Hard mAP and mP@k of a score matrix, identical to ``compute_map`` on its full ranking.

    Args:
        scores: n_db x n_queries similarities (float32 or float64, no NaN); higher is better.
        gnd: revisitop ground truth, one dict per query with ``'easy'``, ``'hard'`` and ``'junk'`` indices.
        kappas: the k of precision@k.

    Returns:
        ``{"easy" | "medium" | "hard": {"map", "aps", "mp", "prs"}}``, the four outputs of
        ``compute_map(np.argsort(-scores, axis=0, kind="stable"), protocol_gnd(gnd, protocol), kappas)``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != len(gnd):
        raise ValueError(f"scores must be n_db x {len(gnd)} (one column per query), got shape {scores.shape}")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    n = scores.shape[0]
    protocols = {name: protocol_gnd(gnd, name) for name in PROTOCOLS}
    items = []
    for q in range(len(gnd)):
        idx = np.unique(np.concatenate([protocols["medium"][q]["ok"], protocols["medium"][q]["junk"]]))
        if idx.size and (idx[0] < 0 or idx[-1] >= n):
            raise ValueError(f"query {q}: ground-truth index outside the database of {n} images")
        items.append(idx)
    positions = _stable_positions(scores, items)

    results = {}
    for name, pgnd in protocols.items():
        per_query = []
        for q, qgnd in enumerate(pgnd):
            if qgnd["ok"].size == 0:
                per_query.append(None)
                continue
            where = {key: positions[q][np.searchsorted(items[q], np.unique(qgnd[key]))] for key in ("ok", "junk")}
            per_query.append(_ranked_without_junk(np.sort(where["ok"]), np.sort(where["junk"]),
                                                  qgnd["ok"].size, kappas))
        mean_ap, aps, mean_pr, prs = _summarise(per_query, kappas)
        results[name] = {"map": mean_ap, "aps": aps, "mp": mean_pr, "prs": prs}
    return results


def format_results(name, results, kappas=KAPPAS):
    """The familiar report lines: dataset name, mAP per protocol and mP@k per protocol, in percent; "n/a" where a
    protocol has no query with positives (its mean is undefined, NaN)."""
    def percent(value):
        return "n/a" if np.isnan(value) else f"{100 * value:.2f}"

    maps = ", ".join(f"{p.capitalize()}: {percent(results[p]['map'])}" for p in PROTOCOLS)
    mps = ", ".join(f"{p.capitalize()}: [{', '.join(percent(v) for v in results[p]['mp'])}]" for p in PROTOCOLS)
    return "\n".join([f">> Test Dataset: {name}",
                      f">> mAP {maps}",
                      f">> mP@k{list(kappas)} {mps}"])
