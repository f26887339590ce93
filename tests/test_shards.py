"""Candidates given as a list of shards: the answers of the concatenated matrix.

Scores may differ in the last bit, because a backend's GEMM may sum in another order
when the tiles are cut at shard boundaries; indices must be identical except where two
candidates' exact scores tie (then either order is right, SPEC 6).
"""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
import oracle
from data import KINDS

#: shard sizes summing to 60, with an empty shard and a one-row shard
CUTS = (0, 7, 7, 8, 31, 60)


def split(x: np.ndarray, cuts=CUTS) -> list[np.ndarray]:
    return [x[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_topk_over_shards_equals_topk_over_the_concatenation(backend, kind, metric):
    rng = np.random.default_rng(3)
    q, c = KINDS[kind](rng, 25, 6), KINDS[kind](rng, 60, 6)
    if metric == "cosine":
        q[np.linalg.norm(q, axis=1) == 0, 0] = 1
        c[np.linalg.norm(c, axis=1) == 0, 0] = 1
    exclude = [rng.choice(60, size=rng.integers(0, 5), replace=False) for _ in range(25)]
    for k in (1, 5, 60, 70):
        whole = hardmine.topk(q, c, k, metric=metric, exclude=exclude, backend=backend)
        sharded = hardmine.topk(q, split(c), k, metric=metric, exclude=exclude, backend=backend)
        np.testing.assert_allclose(sharded.scores, whole.scores, rtol=1e-6, atol=1e-6)
        exact = oracle.scores(q, c, metric)
        if kind == "integer_ties" and metric == "dot":  # exact in float32: the oracle's order exactly
            excluded = np.zeros(exact.shape, dtype=bool)
            for row, ids in enumerate(exclude):
                excluded[row, ids] = True
            np.testing.assert_array_equal(sharded.indices, oracle.topk(q, c, k, "dot", excluded=excluded))
        rows = np.arange(len(q))[:, None]
        valid = whole.indices >= 0
        np.testing.assert_array_equal(sharded.indices >= 0, valid)
        differ = sharded.indices != whole.indices
        np.testing.assert_allclose(exact[rows, sharded.indices][differ & valid], exact[rows, whole.indices][differ & valid],
                                   rtol=0, atol=1e-6, err_msg="indices differ where the exact scores do not tie")


@pytest.mark.parametrize("options", [
    dict(strategy="top", num_negatives=4),
    dict(strategy="top", num_negatives=3, rank_range=(2, 9), relative_margin=0.05, max_score=5.0),
    dict(strategy="random", num_negatives=3, rank_range=(1, 12), seed=7),
    dict(strategy="softmax", num_negatives=3, rank_range=(0, 20), temperature=0.5, seed=2),
    dict(strategy="semihard", num_negatives=2, margin=1.0),
    dict(strategy="top", num_negatives=5, min_score=-1.0, margin=0.1),
])
@pytest.mark.parametrize("keys", [False, True])
def test_mine_over_shards_equals_mine_over_the_concatenation(backend, options, keys):
    rng = np.random.default_rng(11)
    # integer scores are exact in any summation order, so the many exact ties must break alike
    q, c = KINDS["integer_ties"](rng, 30, 5), KINDS["integer_ties"](rng, 60, 5)
    # positives in several shards per query, so s_p needs rows of more than one shard
    positives = [rng.choice(60, size=rng.integers(1, 4), replace=False) for _ in range(30)]
    extra = dict(exclude_keys=rng.integers(0, 12, 60)) if keys else {}
    whole = hardmine.mine(q, c, positives=positives, backend=backend, **options, **extra)
    sharded = hardmine.mine(q, split(c), positives=positives, backend=backend, **options, **extra)
    np.testing.assert_array_equal(sharded.indices, whole.indices)
    np.testing.assert_allclose(sharded.scores, whole.scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sharded.positive_scores, whole.positive_scores, rtol=1e-6)
    np.testing.assert_array_equal(sharded.num_valid, whole.num_valid)
    assert sharded.stats.removed == whole.stats.removed
    assert sharded.stats.key_excluded == whole.stats.key_excluded


def test_groups_and_fp16_shards(backend):
    rng = np.random.default_rng(5)
    q, c = KINDS["gaussian"](rng, 20, 8).astype(np.float16), KINDS["gaussian"](rng, 60, 8).astype(np.float16)
    query_groups, candidate_groups = rng.integers(0, 6, 20), rng.integers(0, 6, 60)
    whole = hardmine.mine(q, c, query_groups=query_groups, candidate_groups=candidate_groups, num_negatives=6,
                          margin=0.2, backend=backend)
    sharded = hardmine.mine(q, split(c), query_groups=query_groups, candidate_groups=candidate_groups,
                            num_negatives=6, margin=0.2, backend=backend)
    np.testing.assert_array_equal(sharded.indices, whole.indices)
    np.testing.assert_allclose(sharded.scores, whole.scores, rtol=1e-6, atol=1e-6)


def test_memory_mapped_shards(tmp_path, backend):
    rng = np.random.default_rng(8)
    q, c = KINDS["gaussian"](rng, 10, 4), KINDS["gaussian"](rng, 60, 4)
    shards = []
    for i, part in enumerate(split(c)):
        np.save(tmp_path / f"{i}.npy", part)
        shards.append(np.load(tmp_path / f"{i}.npy", mmap_mode="r"))
    whole = hardmine.topk(q, c, 9, backend=backend)
    sharded = hardmine.topk(q, shards, 9, backend=backend)
    np.testing.assert_array_equal(sharded.indices, whole.indices)


def test_shards_must_agree_and_some_functions_need_one_array():
    c = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"candidates\[1\] has shape \(4, 2\).*share d and dtype"):
        hardmine.topk(c, [c, c[:, :2]], 1)
    with pytest.raises(ValueError, match=r"candidates\[1\].*share d and dtype"):
        hardmine.topk(c, [c, c.astype(np.float16)], 1)
    with pytest.raises(ValueError, match=r"candidates\[1\] must be 2-D|candidates\[1\]"):
        hardmine.topk(c, [c, np.ones((2, 3, 1), np.float32)], 1)
    with pytest.raises(TypeError, match="violations takes candidates as one array"):
        hardmine.violations(c, [c, c], positives=np.zeros(4, np.int64))
    with pytest.raises(TypeError, match="similarity takes candidates as one array"):
        hardmine.similarity(c, [c, c])
    with pytest.raises(ValueError, match=r"exclude: id 8 at query 0 is outside \[0, 8\)"):
        hardmine.topk(c, [c, c], 1, exclude=np.array([8, 0, 0, 0]))
