"""hardmine.eval against brute-force NumPy (full score matrix, explicit ranks)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import scores64
from data import gaussian
from hardmine import eval as hm_eval


def brute_recall(images, texts, owner, ks):
    dense = scores64(images, texts, "cosine")
    i2t = np.argsort(-dense, axis=1, kind="stable")
    t2i = np.argsort(-dense.T, axis=1, kind="stable")
    image_hits = {k: np.mean([np.any(owner[i2t[i, :k]] == i) for i in range(len(images))]) * 100 for k in ks}
    text_hits = {k: np.mean([owner[t] in t2i[t, :k] for t in range(len(texts))]) * 100 for k in ks}
    return image_hits, text_hits


def test_recall_matches_brute_force(backend):
    rng = np.random.default_rng(0)
    images = gaussian(rng, 60, 16)
    owner = np.repeat(np.arange(60), 5)
    texts = images[owner] + 1.2 * gaussian(rng, 300, 16)
    result = hm_eval.recall_at_k(images, texts, owner, ks=(1, 5, 10), backend=backend)
    image_hits, text_hits = brute_recall(images, texts, owner, (1, 5, 10))
    assert result.i2t == pytest.approx(image_hits) and result.t2i == pytest.approx(text_hits)
    assert result.rsum == pytest.approx(sum(image_hits.values()) + sum(text_hits.values()))
    assert 0 < result.i2t[1] < 100  # the data is neither trivial nor hopeless


def brute_map(queries, candidates, positives):
    dense = scores64(queries, candidates, "cosine")
    aps = []
    for q, pos in enumerate(positives):
        pos = np.sort(np.asarray(pos))
        if pos.size == 0:
            continue
        negatives = np.setdiff1d(np.arange(candidates.shape[0]), pos)
        ranked = pos[np.argsort(-dense[q, pos], kind="stable")]
        precisions = []
        for i, p in enumerate(ranked, start=1):
            rank = i + np.sum(dense[q, negatives] > dense[q, p])
            precisions.append(i / rank)
        aps.append(np.mean(precisions))
    return float(np.mean(aps))


def test_map_matches_brute_force(backend):
    rng = np.random.default_rng(1)
    queries, candidates = gaussian(rng, 25, 8), gaussian(rng, 120, 8)
    positives = [rng.choice(120, size=q % 4, replace=False) for q in range(25)]
    got = hm_eval.mean_average_precision(queries, candidates, positives=[list(p) for p in positives], backend=backend)
    assert got == pytest.approx(brute_map(queries, candidates, positives), abs=1e-9)


def test_map_with_groups(backend):
    rng = np.random.default_rng(2)
    images = gaussian(rng, 20, 8)
    owner = np.repeat(np.arange(20), 3)
    texts = images[owner] + gaussian(rng, 60, 8)
    got = hm_eval.mean_average_precision(images, texts, query_groups=np.arange(20), candidate_groups=owner,
                                         backend=backend)
    expected = brute_map(images, texts, [np.flatnonzero(owner == i) for i in range(20)])
    assert got == pytest.approx(expected, abs=1e-9)


def test_recall_rejects_bad_owner():
    images, texts = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"text_to_image: text 3 points at image 2, outside \[0, 2\)"):
        hm_eval.recall_at_k(images, texts, [0, 0, 1, 2])
    with pytest.raises(ValueError, match=r"one entry per text"):
        hm_eval.recall_at_k(images, texts, [0, 1])
    with pytest.raises(ValueError, match=r"ks must be >= 1"):
        hm_eval.recall_at_k(images, texts, [0, 0, 1, 1], ks=(0,))


def test_map_needs_positives():
    with pytest.raises(ValueError, match=r"needs positives"):
        hm_eval.mean_average_precision(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32))
