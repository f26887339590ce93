"""hardmine.active and hardmine.cluster against float64 NumPy references of SPEC 5.4."""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
from hardmine import active, cluster
from data import KINDS


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_scores(u, x, t, owner, side, margin, threshold, weight, texts_used=None, k=None, boundary=False):
    """SPEC 5.4, dense in float64: h_u = sum_j w_uj over the pairs j (cosine). With ``boundary``,
    also how many of u's pairs lie within float32 rounding (1e-5) of the hard-negative boundary."""
    u, x, t = unit(u), unit(x), unit(t)
    own = np.einsum("ij,ij->i", t, x[owner])
    anchors = t if side == "image" else x[owner]
    s = u @ anchors.T  # (U, pairs)
    difference = s - own[None, :]
    if texts_used is not None:
        difference = difference[:, texts_used]
        s = s[:, texts_used]
    if k is not None:
        order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)[:, :k]
        difference = np.take_along_axis(difference, order, axis=1)
    if weight == "binary":
        scores = (difference > threshold - margin).sum(axis=1).astype(float)
    else:
        scores = np.maximum(0.0, margin - threshold + difference).sum(axis=1)
    if boundary:
        return scores, (np.abs(difference - (threshold - margin)) < 1e-5).sum(axis=1)
    return scores


def world(seed, n_pairs=120, n_unpaired=80, dim=12, two_texts=False):
    rng = np.random.default_rng(seed)
    x = KINDS["clustered"](rng, n_pairs, dim)
    owner = np.repeat(np.arange(n_pairs), 2) if two_texts else np.arange(n_pairs)
    t = x[owner] + 0.7 * rng.standard_normal((owner.size, dim), dtype=np.float32)
    u = KINDS["clustered"](rng, n_unpaired, dim)
    return u, x, t, owner


@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("weight", ["binary", "hinge"])
@pytest.mark.parametrize("threshold", [0.0, 0.1, -0.05])
@pytest.mark.parametrize("two_texts", [False, True])
def test_full_variant_matches_the_reference(backend, side, weight, threshold, two_texts):
    u, x, t, owner = world(1, two_texts=two_texts)
    got = active.score_unpaired(u, x, t, owner if two_texts else None, side=side, margin=0.2, threshold=threshold,
                                weight=weight, backend=backend)
    expected, near_boundary = reference_scores(u, x, t, owner, side, 0.2, threshold, weight, boundary=True)
    if weight == "binary":  # only a pair within float32 rounding of the boundary may count either way
        assert np.all(np.abs(got - expected) <= near_boundary)
    else:  # float32 scores: each pair's hinge within ~1e-6
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * len(t))
    assert got.dtype == np.float64 and got.shape == (len(u),)


@pytest.mark.parametrize("weight", ["binary", "hinge"])
def test_minibatch_and_topk_variants(backend, weight):
    u, x, t, owner = world(2)
    got = active.score_unpaired(u, x, t, variant="minibatch", minibatch_size=30, seed=5, weight=weight,
                                backend=backend)
    used = np.sort(np.random.default_rng(5).choice(len(t), size=30, replace=False))
    expected, near = reference_scores(u, x, t, owner, "image", 0.2, 0.0, weight, texts_used=used, boundary=True)
    assert np.all(np.abs(got - expected) <= (near if weight == "binary" else 2e-6 * used.size))
    again = active.score_unpaired(u, x, t, variant="minibatch", minibatch_size=30, seed=5, weight=weight)
    np.testing.assert_array_equal(got, again)
    top = active.score_unpaired(u, x, t, variant="topk", k=7, weight=weight, backend=backend)
    expected, near = reference_scores(u, x, t, owner, "image", 0.2, 0.0, weight, k=7, boundary=True)
    assert np.all(np.abs(top - expected) <= (near if weight == "binary" else 2e-6 * 7))
    full = active.score_unpaired(u, x, t, weight=weight)
    assert np.all(top <= full + 1e-6)  # a subset of the texts can only lower h_u


def test_select_ties_by_id_and_coreset_greedy():
    assert active.select(np.array([1.0, 3.0, 3.0, 0.0, 3.0]), 4).tolist() == [1, 2, 4, 0]
    rng = np.random.default_rng(3)
    pool, labeled = rng.standard_normal((60, 5)).astype(np.float32), rng.standard_normal((10, 5)).astype(np.float32)
    picks = active.coreset(pool, labeled, 8)
    # reference k-center greedy in float64 (cosine similarity: farthest = lowest best similarity)
    p, lab = unit(pool), unit(labeled)
    best = (p @ lab.T).max(axis=1)
    expected = []
    for _ in range(8):
        chosen = int(np.argmin(best))
        expected.append(chosen)
        best = np.maximum(best, p @ p[chosen])
        best[chosen] = np.inf
    assert picks.tolist() == expected and len(set(expected)) == 8


@pytest.mark.parametrize("kwargs, error, message", [
    ({"side": "audio"}, ValueError, "side must be"),
    ({"weight": "soft"}, ValueError, "weight must be one of"),
    ({"variant": "all"}, ValueError, "variant must be one of"),
    ({"variant": "minibatch"}, ValueError, "needs minibatch_size"),
    ({"variant": "topk"}, ValueError, "needs k"),
    ({"variant": "topk", "k": 0}, ValueError, "k must be >= 1"),
    ({"pairs": np.array([0, 1])}, ValueError, r"pairs must have shape \(120,\)"),
    ({"margin": float("nan")}, ValueError, "margin must be a finite number"),
])
def test_active_bad_arguments(kwargs, error, message):
    u, x, t, _ = world(4)
    with pytest.raises(error, match=message):
        active.score_unpaired(u, x, t, **kwargs)


def test_dimension_mismatch_nan_and_zero_rows_are_named():
    u, x, t, _ = world(4)
    with pytest.raises(ValueError, match="must share d"):
        active.score_unpaired(u[:, :5], x, t)
    bad = u.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"unpaired row 3 contains NaN or inf; clean the data$"):
        active.score_unpaired(bad, x, t)
    bad[3] = 0
    with pytest.raises(ValueError, match="unpaired row 3 has zero norm"):
        active.score_unpaired(bad, x, t)
    with pytest.raises(ValueError, match=r"texts row 2 contains NaN or inf"):
        active.score_unpaired(u, x, np.where(np.arange(len(t))[:, None] == 2, np.inf, t), metric="dot")


def brute_inertia(x, centroids, labels):
    return float(((x.astype(np.float64) - centroids[labels]) ** 2).sum())


@pytest.mark.parametrize("spherical", [False, True])
def test_kmeans_inertia_falls_labels_are_nearest_and_seeds_repeat(backend, spherical):
    rng = np.random.default_rng(6)
    x = KINDS["clustered"](rng, 900, 8, clusters=12)
    result = cluster.kmeans(x, 10, iters=15, seed=3, spherical=spherical, backend=backend)
    history = np.array(result.history)
    assert np.all(np.diff(history) <= 1e-6 * history[0]), history
    data = unit(x) if spherical else x.astype(np.float64)
    c = result.centroids.astype(np.float64)
    distances = ((data[:, None, :] - c[None]) ** 2).sum(-1) if not spherical else 1 - data @ c.T
    nearest = distances.min(axis=1)
    np.testing.assert_allclose(distances[np.arange(len(x)), result.labels], nearest, atol=1e-4)
    np.testing.assert_allclose(result.inertia, nearest.sum(), rtol=1e-4)
    if spherical:
        np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1, rtol=1e-5)
    again = cluster.kmeans(x, 10, iters=15, seed=3, spherical=spherical, backend=backend)
    np.testing.assert_array_equal(again.labels, result.labels)
    other = cluster.kmeans(x, 10, iters=15, seed=4, spherical=spherical, backend=backend)
    assert not np.array_equal(other.centroids, result.centroids)


def test_kmeans_repairs_empty_clusters():
    # 3 distinct points repeated: k=5 leaves clusters empty after the first update unless repaired
    x = np.repeat(np.array([[0, 0], [5, 0], [0, 5], [9, 9], [9, 8]], dtype=np.float32), [40, 40, 40, 1, 1], axis=0)
    result = cluster.kmeans(x, 5, iters=10, seed=0)
    assert np.bincount(result.labels, minlength=5).min() >= 1
    assert result.inertia == pytest.approx(brute_inertia(x, result.centroids, result.labels), abs=1e-3)
    assert result.inertia <= 1.0


def test_kmeans_subsamples_like_faiss_and_checks_input():
    rng = np.random.default_rng(7)
    x = KINDS["clustered"](rng, 3000, 6)
    result = cluster.kmeans(x, 4, iters=5, max_points_per_centroid=100)
    assert result.labels.shape == (3000,)  # trained on 400 rows, every row assigned
    with pytest.raises(ValueError, match=r"k must be <= the number of rows \(3000\)"):
        cluster.kmeans(x, 3001)
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"x row 5 contains NaN or inf; clean the data$"):
        cluster.kmeans(bad, 3)


def test_reliable_negatives_follow_the_definition():
    rng = np.random.default_rng(8)
    x = KINDS["clustered"](rng, 300, 10, clusters=6)
    t = x + 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
    out = cluster.reliable_negatives(x, t, n_image_clusters=6, n_text_clusters=6, image_threshold=0.5,
                                     text_threshold=0.5, num_negatives=5, seed=1)
    image_km = cluster.kmeans(x, 6, seed=1, spherical=True)
    text_km = cluster.kmeans(t, 6, seed=2, spherical=True)
    ci, ct = image_km.labels, text_km.labels
    image_cos = image_km.centroids @ image_km.centroids.T
    text_cos = text_km.centroids @ text_km.centroids.T
    assert np.all(image_cos[ci[out.anchor], ci[out.negative]] < 0.5)
    assert np.all(text_cos[ct[out.anchor], ct[out.negative]] < 0.5)
    counts = np.bincount(out.anchor, minlength=300)
    reliable_total = ((image_cos[ci][:, ci] < 0.5) & (text_cos[ct][:, ct] < 0.5)).sum(axis=1)
    np.testing.assert_array_equal(counts, np.minimum(5, reliable_total))
    assert all(len(set(out.negative[out.anchor == a])) == counts[a] for a in range(0, 300, 17))
    expected_weight = np.clip(1 - (unit(x)[out.anchor] * unit(x)[out.negative]).sum(1), 0, 1)
    np.testing.assert_allclose(out.weight, expected_weight, atol=1e-5)
    again = cluster.reliable_negatives(x, t, n_image_clusters=6, n_text_clusters=6, image_threshold=0.5,
                                       text_threshold=0.5, num_negatives=5, seed=1)
    np.testing.assert_array_equal(again.negative, out.negative)


def reliable_reference(rel, positives, q_row, num_candidates):
    """Dense SPEC 5.4 condition for one query row: the set of its reliable candidates."""
    forbidden_clusters = set()
    for p in positives:
        forbidden_clusters |= set(np.flatnonzero(rel.candidate_similar[rel.candidate_labels[p]]).tolist())
    allowed = set()
    for b in range(num_candidates):
        if rel.candidate_labels[b] in forbidden_clusters:
            continue
        owner = rel.owner_labels[b]
        if owner >= 0 and rel.query_similar[rel.query_labels[q_row], owner]:
            continue
        allowed.add(b)
    return allowed


def test_mine_cluster_strategy_draws_reliable_negatives_block_invariantly(backend):
    rng = np.random.default_rng(9)
    images = KINDS["clustered"](rng, 120, 10, clusters=6)
    owner = np.repeat(np.arange(120), 3)
    texts = images[owner] + 0.3 * rng.standard_normal((360, 10), dtype=np.float32)
    positives = [np.flatnonzero(owner == i) for i in range(120)]
    rel = cluster.reliability(images, texts, positives, n_query_clusters=6, n_candidate_clusters=8,
                              query_threshold=0.3, candidate_threshold=0.3, seed=2)
    result = hardmine.mine(images, texts, positives=positives, strategy="cluster", clusters=rel, num_negatives=4,
                           seed=5, metric="cosine", backend=backend)
    for q in range(0, 120, 7):
        allowed = reliable_reference(rel, positives[q], q, 360)
        got = result.indices[q, : result.num_valid[q]].tolist()
        assert set(got) <= allowed and len(set(got)) == len(got) == min(4, len(allowed))
        assert np.all(np.diff(result.scores[q, : result.num_valid[q]]) <= 0)  # best first
    assert (result.num_valid > 0).mean() > 0.5
    pieces = [hardmine.mine(images[a:b], texts, positives=positives[a:b], strategy="cluster", clusters=rel,
                            num_negatives=4, seed=5, metric="cosine", query_offset=a) for a, b in ((0, 50), (50, 120))]
    np.testing.assert_array_equal(np.concatenate([p.indices for p in pieces]), result.indices)
    with pytest.raises(ValueError, match="come together"):
        hardmine.mine(images, texts, positives=positives, strategy="cluster")
    with pytest.raises(ValueError, match="relative_margin does not apply"):
        hardmine.mine(images, texts, positives=positives, strategy="cluster", clusters=rel, relative_margin=0.1)
    with pytest.raises(ValueError, match="must be <= 1"):
        cluster.reliability(images, texts, positives, n_query_clusters=2, n_candidate_clusters=2,
                            query_threshold=1.5, candidate_threshold=0.2)
