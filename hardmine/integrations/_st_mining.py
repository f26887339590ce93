"""The sentence-transformers drop-in's paths that do not fit :func:`hardmine.mine`: a model
whose similarity is not a dot product (``euclidean``, ``manhattan``), positives kept among
the candidates under a margin, and cross-encoder rescoring. Each scores a (queries, W)
candidate matrix and filters and ranks it as the original does, exactly."""

from __future__ import annotations

import numpy as np

from ..mining.strategies import select

#: the filters in the order the original applies and reports them
FILTERS = ("absolute_margin", "relative_margin", "max_score", "min_score")


def window_pick(ids: np.ndarray, scores: np.ndarray, excluded: np.ndarray, s_p: np.ndarray, filters: dict,
                range_min: int, range_max: int, num_negatives: int, strategy: str, seed: int,
                first_row: int, min_score_counts_dropped: bool) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Negatives from a candidate matrix: ``ids``/``scores`` (Q, W) (-1 padded), ``excluded``
    (Q, W) the positives to drop, ``s_p`` (Q,) the hardest positive's score. The filters
    remove candidates with the original's float32 expressions; the survivors are ranked by
    score (ties by the smaller id), ranks ``[range_min, range_max)`` kept and ``top`` or
    ``random`` (hardmine's seeded draws) applied. ``min_score_counts_dropped``: the ``min_score``
    count includes candidates dropped already (sentence-transformers before 6.3). Returns
    (indices, scores, removed per filter)."""
    scores = np.where((ids >= 0) & ~excluded, scores.astype(np.float32), np.float32(-np.inf))
    s_p = s_p.astype(np.float32)[:, None]
    removed = {}
    for name in FILTERS:
        value = filters.get(name)
        if value is None:
            continue
        if name == "absolute_margin":
            drop = scores + np.float32(value) > s_p
        elif name == "relative_margin":
            drop = scores > s_p - np.abs(s_p) * np.float32(value)
        elif name == "max_score":
            drop = scores > np.float32(value)
        else:
            drop = scores < np.float32(value)
            if not min_score_counts_dropped:
                drop &= scores > -np.inf
        removed[name] = int(drop.sum())
        scores = np.where(drop, np.float32(-np.inf), scores)
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores.astype(np.float64)), axis=1)
    order = order[:, range_min:range_max]
    window_scores = np.take_along_axis(scores, order, axis=1)
    window_ids = np.where(window_scores > -np.inf, np.take_along_axis(ids, order, axis=1), -1)
    picked_ids, picked_scores = select(strategy, window_ids, window_scores, num_negatives, seed, None, first_row)
    return picked_ids, picked_scores, removed


def positive_mask(ids: np.ndarray, first_row: int, indptr: np.ndarray, positive_ids: np.ndarray) -> np.ndarray:
    """(Q, W) True where ``ids[q, w]`` is a positive of query ``first_row + q``."""
    mask = np.zeros(ids.shape, dtype=bool)
    for row in range(ids.shape[0]):
        query = first_row + row
        mask[row] = np.isin(ids[row], positive_ids[indptr[query] : indptr[query + 1]])
    return mask


def blockwise(similarity, query_vectors: np.ndarray, corpus_vectors: np.ndarray, indptr: np.ndarray,
              positive_ids: np.ndarray, s_p: np.ndarray, include_positives: bool, block_rows: int,
              query_text: np.ndarray, **pick) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """:func:`window_pick` over the whole corpus, ``block_rows`` queries at a time, scored by
    ``similarity`` (float32 (rows, C) scores): exact (no truncated candidate list), memory
    ``block_rows`` x corpus. ``query_text`` (Q,): the corpus id of each query's own text, never a
    negative (-1: none)."""
    parts, removed_total = [], {}
    num_candidates = corpus_vectors.shape[0]
    for start in range(0, query_vectors.shape[0], block_rows):
        stop = min(start + block_rows, query_vectors.shape[0])
        scores = similarity(query_vectors[start:stop], corpus_vectors)
        ids = np.broadcast_to(np.arange(num_candidates, dtype=np.int64), scores.shape)
        excluded = (np.zeros(scores.shape, dtype=bool) if include_positives
                    else positive_mask(ids, start, indptr, positive_ids))
        excluded |= ids == query_text[start:stop, None]
        found, found_scores, removed = window_pick(ids, scores, excluded, s_p[start:stop], first_row=start, **pick)
        parts.append((found, found_scores))
        for name, count in removed.items():
            removed_total[name] = removed_total.get(name, 0) + count
    if not parts:
        width = pick["num_negatives"]
        return np.zeros((0, width), np.int64), np.zeros((0, width), np.float32), removed_total
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), removed_total)


def top_candidates(similarity, query_vectors: np.ndarray, corpus_vectors: np.ndarray, k: int, metric: str | None,
                   block_rows: int) -> np.ndarray:
    """Each query's ``k`` best corpus ids by the bi-encoder (positives included, -1 padded):
    the candidate list the original rescores with a cross-encoder. Dot-product similarities
    run on hardmine's engine; others on ``similarity`` blockwise."""
    from .. import api

    if metric is not None:
        return np.asarray(api.topk(query_vectors, corpus_vectors, k, metric=metric).indices)
    out = np.full((query_vectors.shape[0], k), -1, dtype=np.int64)
    for start in range(0, query_vectors.shape[0], block_rows):
        scores = similarity(query_vectors[start : start + block_rows], corpus_vectors)
        ids = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        order = np.lexsort((ids, -scores.astype(np.float64)), axis=1)[:, :k]
        out[start : start + scores.shape[0], : order.shape[1]] = order
    return out
