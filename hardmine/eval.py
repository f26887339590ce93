"""Retrieval evaluation on the blocked engine (no (N, M) score matrix).

COCO / Flickr30k protocol: each image has several captions; an image query is
correct at K when any of its captions is among the K best texts, a caption query
when its image is among the K best images.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _positives, engine
from . import _validation as v


class Recall(NamedTuple):
    """R@K in percent for image->text and text->image retrieval, and their sum (rsum)."""

    i2t: dict[int, float]
    t2i: dict[int, float]
    rsum: float


def _ks(ks: Any) -> tuple[int, ...]:
    values = tuple(v.positive_int(k, "ks") for k in np.atleast_1d(np.asarray(ks)).tolist())
    if not values:
        raise ValueError("ks must name at least one K")
    return values


def recall_at_k(
    images: Any,
    texts: Any,
    text_to_image: Any,
    ks: Any = (1, 5, 10),
    *,
    metric: str = "cosine",
    backend: str = "auto",
    num_threads: int | None = None,
) -> Recall:
    """Recall@K both ways for paired image and text embeddings.

    ``text_to_image[t]`` is the row of ``images`` that text ``t`` describes. The
    metric defaults to cosine, as in CLIP-style evaluation. Ties count against
    the query (the engine breaks them by the smaller index).

    Examples
    --------
    >>> import numpy as np
    >>> images = np.eye(3, dtype=np.float32)
    >>> texts = np.repeat(images, 2, axis=0) + 0.1
    >>> recall_at_k(images, texts, [0, 0, 1, 1, 2, 2], ks=(1,)).rsum
    200.0
    """
    ks = _ks(ks)
    owner = np.asarray(text_to_image)
    if owner.dtype.kind not in "iu" or owner.ndim != 1:
        raise TypeError(f"text_to_image must be a 1-D integer array; got {owner.dtype} with shape {owner.shape}")
    num_images = np.shape(images)[0] if hasattr(images, "shape") else len(images)
    if owner.shape[0] != (np.shape(texts)[0] if hasattr(texts, "shape") else len(texts)):
        raise ValueError(f"text_to_image must have one entry per text; got {owner.shape[0]}")
    if owner.size and (owner.min() < 0 or owner.max() >= num_images):
        bad = int(np.argmax((owner < 0) | (owner >= num_images)))
        raise ValueError(f"text_to_image: text {bad} points at image {int(owner[bad])}, outside [0, {num_images})")
    depth = max(ks)
    common = dict(metric=metric, backend=backend, num_threads=num_threads)
    i2t = np.asarray(engine.topk(images, texts, depth, **common).indices)
    t2i = np.asarray(engine.topk(texts, images, depth, **common).indices)
    hits_i2t = (np.where(i2t >= 0, owner[np.maximum(i2t, 0)], -1) == np.arange(num_images)[:, None])
    hits_t2i = t2i == owner[:, None]
    image_recall = {k: 100.0 * float(hits_i2t[:, :k].any(axis=1).mean()) for k in ks}
    text_recall = {k: 100.0 * float(hits_t2i[:, :k].any(axis=1).mean()) for k in ks}
    return Recall(image_recall, text_recall, sum(image_recall.values()) + sum(text_recall.values()))


def mean_average_precision(
    queries: Any,
    candidates: Any,
    *,
    positives: Any = None,
    query_groups: Any = None,
    candidate_groups: Any = None,
    metric: str = "cosine",
    backend: str = "auto",
    num_threads: int | None = None,
) -> float:
    """Mean over queries of the average precision of their positives in the full ranking.

    A positive's rank is 1 + the number of non-positives scoring strictly higher
    (ties count in its favour) + the number of the query's positives ranked
    before it (by score, then candidate id). Each (query, positive)
    pair is one blocked violation count against the non-positives, so the cost is
    that of a top-k over (number of positive pairs) queries; no (Q, C) matrix.
    Queries without positives are left out of the mean.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> c = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5]], dtype=np.float32)
    >>> round(mean_average_precision(q, c, positives=[[0, 2]]), 4)  # ranks 1 and 3: (1/1 + 2/3) / 2
    0.8333
    """
    problem = v.problem(queries, candidates, metric_name=metric, exclude=positives, query_groups=query_groups,
                        candidate_groups=candidate_groups)
    members = _positives.positive_members(problem)
    if members is None:
        raise ValueError("mean_average_precision needs positives or query_groups + candidate_groups")
    indptr, ids = members
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(problem.queries.rows), counts)
    if rows.size == 0:
        raise ValueError("mean_average_precision: no query has a positive")
    # One pass per (query, positive): how many non-positives score above that positive.
    pair_queries = problem.queries.array[rows]
    pair_scores = _positives.pair_scores(problem, rows, ids).astype(np.float32)
    excluded_indptr = np.concatenate([[0], np.cumsum(counts[rows])])
    excluded_ids = np.concatenate([ids[indptr[q] : indptr[q + 1]] for q in rows]) if rows.size else ids
    above = engine.violations(
        pair_queries, problem.candidates.array, pair_scores, positives=(excluded_indptr, excluded_ids), margin=0.0,
        metric=metric, backend=backend, num_threads=num_threads, check_finite=False,
    ).count
    precisions = np.empty(rows.size)
    for query in np.flatnonzero(counts):
        span = slice(indptr[query], indptr[query + 1])
        order = np.argsort(-pair_scores[span], kind="stable")
        positives_above = np.arange(1, order.size + 1)
        precisions[indptr[query] + order] = positives_above / (positives_above + np.asarray(above)[span][order])
    per_query = np.add.reduceat(precisions, indptr[:-1][counts > 0]) / counts[counts > 0]
    return float(per_query.mean())
