"""Active learning by hard-negative unpaired samples (Jo et al. 2024), SPEC 5.4.

Paired data: texts ``T`` and images ``X``, text j describing image ``pairs[j]``
(its own image x_j). An unpaired image u is a hard negative for text t_j when

    s(u, t_j) > s(x_j, t_j) - margin + threshold

(it would incur triplet loss with t_j as the anchor). Its weight is 1
(``weight="binary"``) or the hinge ``max(0, margin - threshold + s(u, t_j) - s(x_j, t_j))``
(``weight="hinge"``), else 0, and its score is ``h_u = sum_j w_uj``. Variants:
``full`` (every text), ``minibatch`` (a seeded random subset of ``minibatch_size``
texts), ``topk`` (only u's ``k`` most similar texts). ``side="text"`` scores
unpaired texts v the same way with each pair's image as the anchor: s(v, x_j)
against s(x_j, t_j).

Everything runs on the blocked engine, never building the (U, T) matrix: the
positive score joins the text as one extra coordinate, so that
``[u, 1] . [t_j, -s(x_j, t_j)] = s(u, t_j) - s(x_j, t_j)`` and one
:func:`hardmine.violations` pass yields both weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validation as v
from ._rows import scan_rows
from . import engine

WEIGHTS = ("binary", "hinge")
VARIANTS = ("full", "minibatch", "topk")


def _rows(x: Any, name: str, metric: str) -> np.ndarray:
    """float32 rows of an embedding input (one copy, needed for the extra coordinate), unit-norm
    under cosine; NaN/inf rejected."""
    if metric == "cosine":
        return v.unit_rows(x, name)
    emb = v.embeddings(x, name)
    scan_rows(emb, check_finite=True, want_norms=False, skippable=False)
    return emb.rows_f32(0, emb.rows)


def score_unpaired(
    unpaired: Any,
    images: Any,
    texts: Any,
    pairs: Any = None,
    *,
    side: str = "image",
    margin: float = 0.2,
    threshold: float = 0.0,
    weight: str = "binary",
    variant: str = "full",
    minibatch_size: int | None = None,
    k: int | None = None,
    seed: int = 0,
    metric: str = "cosine",
    backend: str = "auto",
) -> np.ndarray:
    """h_u for every unpaired sample (float64, (U,)); see the module docstring.

    ``pairs[j]`` is the image row of text j (default: text j describes image j).
    ``side="image"``: ``unpaired`` are images scored against the texts;
    ``side="text"``: ``unpaired`` are texts scored against the images.

    Examples
    --------
    >>> import numpy as np
    >>> images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> texts = images.copy()
    >>> unpaired = np.array([[0.9, 0.1], [-1.0, 0.0]], dtype=np.float32)
    >>> score_unpaired(unpaired, images, texts, margin=0.2).tolist()  # u0 is close to text 0, u1 to none
    [1.0, 0.0]
    """
    if side not in ("image", "text"):
        raise ValueError(f"side must be 'image' or 'text'; got {side!r}")
    if weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {WEIGHTS}; got {weight!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    margin, threshold = v.real(margin, "margin"), v.real(threshold, "threshold")
    metric = v.metric(metric)
    u = _rows(unpaired, "unpaired", metric)
    x, t = _rows(images, "images", metric), _rows(texts, "texts", metric)
    if not (u.shape[1] == x.shape[1] == t.shape[1]):
        raise ValueError(f"unpaired, images and texts must share d; got {u.shape[1]}, {x.shape[1]}, {t.shape[1]}")
    owner = np.arange(t.shape[0]) if pairs is None else v.int_array(pairs, "pairs").ravel().astype(np.int64)
    if owner.shape != (t.shape[0],):
        raise ValueError(f"pairs must have shape ({t.shape[0]},), the image row of each text; got {owner.shape}")
    if owner.size and (owner.min() < 0 or owner.max() >= x.shape[0]):
        raise ValueError(f"pairs: image row {int(owner[(owner < 0) | (owner >= x.shape[0])][0])} is outside "
                         f"[0, {x.shape[0]})")
    # One anchor per pair j: its text (for unpaired images) or its image (for unpaired texts),
    # with the pair's own score s(x_j, t_j).
    own = np.einsum("ij,ij->i", t, x[owner], dtype=np.float64)
    anchors = t if side == "image" else x[owner]
    if variant == "minibatch":
        size = v.positive_int(minibatch_size, "minibatch_size") if minibatch_size is not None else None
        if size is None:
            raise ValueError("variant='minibatch' needs minibatch_size")
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(anchors.shape[0], size=min(size, anchors.shape[0]), replace=False))
        anchors, own = anchors[chosen], own[chosen]
    hinge_margin = margin - threshold
    if variant == "topk":
        if k is None:
            raise ValueError("variant='topk' needs k")
        k = v.positive_int(k, "k")
        nearest = engine.topk(u, anchors, k, metric="dot", backend=backend)
        found = np.asarray(nearest.indices)
        difference = np.asarray(nearest.scores, dtype=np.float64) - own[np.maximum(found, 0)]
        valid = found >= 0
        if weight == "binary":
            return ((difference > threshold - margin) & valid).sum(axis=1).astype(np.float64)
        return np.where(valid, np.maximum(0.0, hinge_margin + difference), 0.0).sum(axis=1)
    shifted = np.concatenate([anchors, -own.astype(np.float32)[:, None]], axis=1)
    extended = np.concatenate([u, np.ones((u.shape[0], 1), np.float32)], axis=1)
    result = engine.violations(extended, shifted, np.zeros(u.shape[0], np.float32), margin=hinge_margin,
                            metric="dot", backend=backend)
    return np.asarray(result.count if weight == "binary" else result.hinge_sum, dtype=np.float64)


def select(scores: Any, budget: int) -> np.ndarray:
    """The ``budget`` highest-scoring ids, best first, ties by the smaller id.

    Examples
    --------
    >>> select(np.array([0.5, 2.0, 2.0, 1.0]), 3).tolist()
    [1, 2, 3]
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    budget = v.positive_int(budget, "budget")
    if np.isnan(scores).any():
        raise ValueError(f"scores row {int(np.argmax(np.isnan(scores)))} is NaN")
    return np.lexsort((np.arange(scores.size), -scores))[:budget].astype(np.int64)


def coreset(unlabeled: Any, labeled: Any, budget: int, *, metric: str = "cosine", backend: str = "auto") -> np.ndarray:
    """k-center greedy (Sener & Savarese 2018): repeatedly the unlabeled row farthest from
    everything chosen so far (the labeled rows and earlier picks), ``budget`` ids in pick order.

    Distances are those of the metric's scores (farthest = lowest best score); the first
    distances to the labeled set come from the engine's top-1 scan.
    """
    metric = v.metric(metric)
    budget = v.positive_int(budget, "budget")
    u = _rows(unlabeled, "unlabeled", metric)
    best = np.full(u.shape[0], -np.inf)
    if labeled is not None and np.shape(labeled)[0]:
        lab = _rows(labeled, "labeled", metric)
        best = np.asarray(engine.topk(u, lab, 1, metric="dot", backend=backend).scores[:, 0], dtype=np.float64)
    picks = []
    for _ in range(min(budget, u.shape[0])):
        chosen = int(np.argmin(best))  # the farthest row; ties by the smaller id
        picks.append(chosen)
        np.maximum(best, u @ u[chosen], out=best)
        best[chosen] = np.inf
    return np.asarray(picks, dtype=np.int64)
