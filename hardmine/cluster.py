"""k-means on the engine and reliable negatives by clustering (Tagami et al. 2024), SPEC 5.4."""

from __future__ import annotations

from typing import Any, NamedTuple

import numba
import numpy as np

from . import _positives, _rows, engine
from . import _validation as v
from ._draws import uniform

#: rows assigned per engine call (bounds the one-column-wider copy the assignment needs)
_ASSIGN_ROWS = 65536


class KMeans(NamedTuple):
    """``centroids`` (k, d) float32, ``labels`` (n,) int64, ``inertia`` (on every row) and
    ``history`` (the training sample's inertia after each assignment step, non-increasing)."""

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    history: list[float]


@numba.njit(cache=True, nogil=True)
def _cluster_sums(x, labels, k):
    """Per-cluster float64 sums of the rows and their counts, in one pass without copies."""
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    for i in range(x.shape[0]):
        c = labels[i]
        counts[c] += 1
        for j in range(x.shape[1]):
            sums[c, j] += x[i, j]
    return sums, counts


def _assign(x: np.ndarray, centroids: np.ndarray, spherical: bool, backend: str,
            extended_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row and the squared distance to it (spherical: 1 - cosine of the
    normalised row),
    through the engine's fused top-1: argmin |x - c|^2 = argmax x.c - |c|^2 / 2, one extra coordinate."""
    labels = np.empty(x.shape[0], dtype=np.int64)
    distances = np.empty(x.shape[0], dtype=np.float64)
    if spherical:
        bias = np.zeros(centroids.shape[0], dtype=np.float32)
    else:
        bias = -0.5 * np.einsum("ij,ij->i", centroids, centroids, dtype=np.float64).astype(np.float32)
    extended = np.concatenate([centroids, bias[:, None]], axis=1)
    for start in range(0, x.shape[0], _ASSIGN_ROWS):
        rows = np.asarray(x[start : start + _ASSIGN_ROWS], dtype=np.float32)
        if extended_rows is not None:  # the training sample, extended once for every iteration
            query = extended_rows[start : start + _ASSIGN_ROWS]
        else:
            if spherical:
                rows = v.unit_rows(rows, "x")
            query = np.concatenate([rows, np.ones((rows.shape[0], 1), np.float32)], axis=1)
        best = engine.topk(query, extended, 1, backend=backend, check_finite=False)
        labels[start : start + rows.shape[0]] = np.asarray(best.indices)[:, 0]
        score = np.asarray(best.scores, dtype=np.float64)[:, 0]
        if spherical:
            distances[start : start + rows.shape[0]] = 1.0 - score
        else:
            squared = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
            distances[start : start + rows.shape[0]] = np.maximum(squared - 2.0 * score, 0.0)
    return labels, distances


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, spherical: bool) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability
    proportional to the squared distance to the nearest centre chosen so far."""
    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(x.shape[0]))
    centers[0] = x[first]
    squared = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    nearest = np.maximum(squared - 2.0 * (x @ centers[0]) + squared[first], 0.0)
    for i in range(1, k):
        total = nearest.sum()
        pick = int(rng.integers(x.shape[0])) if total <= 0 else int(
            min(np.searchsorted(np.cumsum(nearest), rng.random() * total, side="right"), x.shape[0] - 1))
        centers[i] = x[pick]
        np.minimum(nearest, np.maximum(squared - 2.0 * (x @ centers[i]) + squared[pick], 0.0), out=nearest)
    return v.unit_rows(centers, "centroids") if spherical else centers


def kmeans(
    x: Any,
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    spherical: bool = False,
    max_points_per_centroid: int = 256,
    init_points_per_centroid: int = 32,
    backend: str = "auto",
) -> KMeans:
    """Lloyd's k-means with k-means++ seeding, the assignment step on the engine's top-1 scan.

    Like FAISS, it trains on a seeded random sample of at most
    ``max_points_per_centroid * k`` rows, then assigns every row; k-means++ seeds
    from at most ``init_points_per_centroid * k`` of those. An empty cluster is
    re-seeded at the sample row farthest from its centroid (which lowers the
    inertia). ``spherical=True`` clusters L2-normalised rows with unit centroids
    (for cosine); inertia is then the sum of 1 - cosine.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=np.float32)
    >>> result = kmeans(x, 2, seed=0)
    >>> sorted(result.labels.tolist()) == [0, 0, 1, 1] and result.inertia == 1.0
    True
    """
    emb = v.embeddings(x, "x")
    k = v.positive_int(k, "k")
    iters = v.positive_int(iters, "iters")
    if k > emb.rows:
        raise ValueError(f"k must be <= the number of rows ({emb.rows}); got {k}")
    rng = np.random.default_rng(seed)
    n_train = min(emb.rows, max_points_per_centroid * k)
    rows = np.sort(rng.choice(emb.rows, size=n_train, replace=False)) if n_train < emb.rows else None
    _rows.scan_rows(emb, check_finite=True, want_norms=False, skippable=False)
    train = np.asarray(emb.array[rows], dtype=np.float32) if rows is not None else emb.rows_f32(0, emb.rows)
    if spherical:
        train = v.unit_rows(train, "x")
    n_init = min(n_train, init_points_per_centroid * k)
    init = train if n_init == n_train else train[np.sort(rng.choice(n_train, size=n_init, replace=False))]
    centroids = _plus_plus(init, k, rng, spherical)
    history: list[float] = []
    extended = np.concatenate([train, np.ones((train.shape[0], 1), np.float32)], axis=1)
    for _ in range(iters):
        labels, distances = _assign(train, centroids, spherical, backend, extended)
        history.append(float(distances.sum()))
        sums, counts = _cluster_sums(train, labels, k)
        present = np.flatnonzero(counts)
        centroids = centroids.copy()
        centroids[present] = (sums[present] / counts[present, None]).astype(np.float32)
        empty = np.flatnonzero(counts == 0)
        if empty.size:  # re-seed at the farthest rows, each used once
            farthest = np.argsort(-distances, kind="stable")[: empty.size]
            centroids[empty] = train[farthest]
        if spherical:
            centroids = v.unit_rows(centroids, "centroids")
    if rows is None:
        labels, distances = _assign(train, centroids, spherical, backend, extended)
    else:
        labels, distances = _assign(emb.array, centroids, spherical, backend)
    return KMeans(centroids, labels, float(distances.sum()), history)


class ReliableNegatives(NamedTuple):
    """Per swapped pair: ``anchor`` (the pair whose image is kept), ``negative`` (the pair whose
    text replaces it) and ``weight``, all (m,)."""

    anchor: np.ndarray
    negative: np.ndarray
    weight: np.ndarray


def reliable_negatives(
    images: Any,
    texts: Any,
    pairs: Any = None,
    *,
    n_image_clusters: int,
    n_text_clusters: int,
    image_threshold: float,
    text_threshold: float,
    num_negatives: int,
    weight: str = "linear",
    seed: int = 0,
    iters: int = 20,
    backend: str = "auto",
) -> ReliableNegatives:
    """Reliable negatives by clustering (Tagami et al. 2024).

    Pair a is (image ``pairs[a]``, text a); default: text a describes image a.
    Images and texts are clustered separately (spherical k-means, cosine). The
    swapped pair (image of a, text of b) is a reliable negative only when the
    centroids of a's and b's image clusters have cosine below ``image_threshold``
    *and* those of their text clusters below ``text_threshold`` (both at most 1).
    Each anchor gets ``num_negatives`` reliable negatives drawn uniformly without
    replacement (seeded, as :func:`draw_reliable`; fewer when fewer exist), each
    weighted ``1 - cos(image of a, image of b)`` clipped to [0, 1]
    (``weight="linear"``) or 1 (``weight="uniform"``).
    """
    if weight not in ("linear", "uniform"):
        raise ValueError(f"weight must be 'linear' or 'uniform'; got {weight!r}")
    image_threshold = cosine_threshold(image_threshold, "image_threshold")
    text_threshold = cosine_threshold(text_threshold, "text_threshold")
    count = v.positive_int(num_negatives, "num_negatives")
    x = v.unit_rows(images, "images")
    t = v.embeddings(texts, "texts")
    owner = np.arange(t.rows) if pairs is None else v.int_array(pairs, "pairs").ravel().astype(np.int64)
    if owner.shape != (t.rows,) or (owner.size and (owner.min() < 0 or owner.max() >= x.shape[0])):
        raise ValueError(f"pairs must hold, for each of the {t.rows} texts, an image row in [0, {x.shape[0]})")
    image_labels, image_similar = _clusters(x, n_image_clusters, image_threshold, seed, iters, backend)
    text_labels, text_similar = _clusters(t.array, n_text_clusters, text_threshold, seed + 1, iters, backend)
    # Pairs as queries and texts as candidates: pair a's own text is its positive, and text b
    # belongs to pair b's image, so draw_reliable's condition is exactly the one above.
    pair_image = image_labels[owner]
    facts = Reliability(pair_image, text_labels, image_similar, text_similar, pair_image)
    num_pairs = t.rows
    own_text = (np.arange(num_pairs + 1, dtype=np.int64), np.arange(num_pairs, dtype=np.int64))
    drawn = draw_reliable(facts, own_text, np.arange(num_pairs), count, seed)
    valid = drawn >= 0
    anchor_ids = np.broadcast_to(np.arange(num_pairs)[:, None], drawn.shape)[valid]
    negative_ids = drawn[valid]
    if weight == "uniform":
        weights = np.ones(anchor_ids.size)
    else:
        similarity = np.einsum("ij,ij->i", x[owner[anchor_ids]], x[owner[negative_ids]], dtype=np.float64)
        weights = np.clip(1.0 - similarity, 0.0, 1.0)
    return ReliableNegatives(anchor_ids, negative_ids, weights)


class Reliability(NamedTuple):
    """Cluster facts behind ``mine(strategy="cluster")``, built once by :func:`reliability`.

    ``query_labels`` (Q,) and ``candidate_labels`` (C,) are cluster ids; ``query_similar``
    (kq, kq) and ``candidate_similar`` (kc, kc) mark cluster pairs whose centroids are too
    similar; ``owner_labels`` (C,) is the query cluster of the (first) query each candidate
    is a positive of, -1 for a candidate that is nobody's positive.
    """

    query_labels: np.ndarray
    candidate_labels: np.ndarray
    query_similar: np.ndarray
    candidate_similar: np.ndarray
    owner_labels: np.ndarray


def cosine_threshold(value: float, name: str) -> float:
    """A centroid-cosine threshold, checked (a real number, at most 1)."""
    value = v.real(value, name)
    if value > 1:  # a cluster must count as similar to itself, which keeps positives out of the draws
        raise ValueError(f"{name} is a cosine between centroids and must be <= 1; got {value}")
    return value


def _clusters(x: Any, k: int, threshold: float, seed: int, iters: int, backend: str):
    """Spherical k-means labels and the (k, k) mask of centroid pairs with cosine >= threshold."""
    km = kmeans(x, k, iters=iters, seed=seed, spherical=True, backend=backend)
    return km.labels, km.centroids @ km.centroids.T >= threshold


def reliability(
    queries: Any,
    candidates: Any,
    positives: Any = None,
    *,
    query_groups: Any = None,
    candidate_groups: Any = None,
    n_query_clusters: int,
    n_candidate_clusters: int,
    query_threshold: float,
    candidate_threshold: float,
    seed: int = 0,
    iters: int = 20,
    backend: str = "auto",
) -> Reliability:
    """Clusters queries and candidates separately (spherical k-means) for ``mine(strategy="cluster")``.

    Candidate b is then a reliable negative for query q when b's cluster is dissimilar
    (centroid cosine below ``candidate_threshold``) to the clusters of all of q's
    positives and, if b is some query q''s positive, q's and q''s clusters are
    dissimilar (below ``query_threshold``) — Tagami et al.'s condition on both sides.
    """
    query_threshold = cosine_threshold(query_threshold, "query_threshold")
    candidate_threshold = cosine_threshold(candidate_threshold, "candidate_threshold")
    problem = v.problem(queries, candidates, metric_name="dot", exclude=positives, query_groups=query_groups,
                        candidate_groups=candidate_groups, check_finite=False)
    members = _positives.positive_members(problem)
    if members is None:
        raise ValueError("reliability needs positives, or query_groups with candidate_groups")
    query_labels, query_similar = _clusters(queries, n_query_clusters, query_threshold, seed, iters, backend)
    candidate_labels, candidate_similar = _clusters(candidates, n_candidate_clusters, candidate_threshold, seed + 1,
                                                    iters, backend)
    indptr, ids = members
    owner_query = np.full(problem.candidates.rows, -1, dtype=np.int64)
    rows = np.repeat(np.arange(problem.queries.rows), np.diff(indptr))
    owner_query[ids[::-1]] = rows[::-1]  # the first query wins
    owner_labels = np.where(owner_query >= 0, query_labels[np.maximum(owner_query, 0)], -1)
    return Reliability(query_labels, candidate_labels, query_similar, candidate_similar, owner_labels)


def draw_reliable(
    reliability: Reliability, members: tuple[np.ndarray, np.ndarray], query_rows: np.ndarray, count: int, seed: int
) -> np.ndarray:
    """(len(query_rows), count) reliable candidate ids per query, -1 padded, drawn uniformly
    without replacement from hash-seeded proposals: they depend only on (seed, query row)."""

    indptr, ids = members
    num_candidates = reliability.candidate_labels.size
    queries = query_rows.size
    # Per query: candidate clusters it may not draw from (similar to one of its positives' clusters).
    forbidden = np.zeros((queries, reliability.candidate_similar.shape[0]), dtype=bool)
    rows = np.repeat(np.arange(queries), np.diff(indptr))
    np.logical_or.at(forbidden, rows, reliability.candidate_similar[reliability.candidate_labels[ids]])
    query_clusters = reliability.query_labels[query_rows]

    def reliable(q: np.ndarray, b: np.ndarray) -> np.ndarray:
        owner = reliability.owner_labels[b]
        owner_ok = (owner < 0) | ~reliability.query_similar[query_clusters[q], np.maximum(owner, 0)]
        return ~forbidden[q, reliability.candidate_labels[b]] & owner_ok

    out = np.full((queries, count), -1, dtype=np.int64)
    filled = np.zeros(queries, dtype=np.int64)
    draws = 4 * count
    pending = np.arange(queries)
    proposal_seed = (seed * 0x9E3779B1 + 0x5BD1E995) % 2**63  # independent of the random strategy's draws
    for round_ in range(16):
        if pending.size == 0:
            break
        counter = round_ * draws + np.arange(draws)
        picks = (uniform(proposal_seed, query_rows[pending][:, None], counter[None, :]) * num_candidates).astype(
            np.int64)
        ok = reliable(np.repeat(pending, draws).reshape(pending.size, draws), picks)
        still = []
        for row, q in enumerate(pending):
            for b in picks[row][ok[row]]:
                if filled[q] < count and b not in out[q, : filled[q]]:
                    out[q, filled[q]] = b
                    filled[q] += 1
            if filled[q] < count:
                still.append(q)
        pending = np.asarray(still, dtype=np.int64)
    everyone = np.arange(num_candidates)
    for q in pending:  # few reliable candidates: enumerate them, then draw by the same hash
        allowed = everyone[reliable(np.full(num_candidates, q), everyone)]
        allowed = np.setdiff1d(allowed, out[q, : filled[q]])
        keys = uniform(proposal_seed, np.full(allowed.size, query_rows[q]), allowed + num_candidates)
        extra = allowed[np.argsort(keys, kind="stable")][: count - filled[q]]
        out[q, filled[q] : filled[q] + extra.size] = extra
        filled[q] += extra.size
    return out
