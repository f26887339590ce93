"""SPEC 7: every bad input gets a clear exception naming the argument (one test per message)."""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
from hardmine import backends, engine

Q = np.ones((4, 3), dtype=np.float32)
C = np.ones((6, 3), dtype=np.float32)


def raises(error, match, *args, fn=hardmine.topk, **kwargs):
    with pytest.raises(error, match=match):
        fn(*args, **kwargs)


def test_queries_wrong_ndim():
    raises(ValueError, r"queries must be 2-D \(n, d\); got shape \(3,\)", np.ones(3, np.float32), C, 1)


def test_candidates_wrong_ndim():
    raises(ValueError, r"candidates must be 2-D", Q, np.ones((2, 2, 3), np.float32), 1)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, bool, object, np.complex64])
def test_wrong_dtype(dtype):
    raises(TypeError, r"candidates must hold float32, float16 or bfloat16 values; got dtype", Q, C.astype(dtype), 1)


def test_not_an_array():
    raises(TypeError, r"queries must be a 2-D array of embeddings; got str", "abc", C, 1)


def test_zero_columns():
    raises(ValueError, r"queries must have at least one column", np.ones((2, 0), np.float32),
           np.ones((2, 0), np.float32), 1)


def test_dimension_mismatch():
    raises(ValueError, r"same dimension d; got 3 and 5", Q, np.ones((6, 5), np.float32), 1)


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one(k):
    raises(ValueError, r"k must be >= 1; got", Q, C, k)


@pytest.mark.parametrize("k", [1.5, "2", True, None])
def test_k_not_integer(k):
    raises(TypeError, r"k must be an integer", Q, C, k)


def test_negative_exclude_id():
    raises(ValueError, r"exclude: id -1 at query 2 is outside \[0, 6\)", Q, C, 1, exclude=np.array([0, 1, -1, 2]))


def test_out_of_range_exclude_id():
    raises(ValueError, r"exclude: id 6 at query 0 is outside \[0, 6\)", Q, C, 1, exclude=[[6], [], [], []])


def test_exclude_wrong_length():
    raises(ValueError, r"exclude must have shape \(Q,\) or \(Q, m\) with Q = 4", Q, C, 1, exclude=np.arange(3))


def test_exclude_float_ids():
    raises(TypeError, r"exclude must hold integer ids; got dtype float64", Q, C, 1, exclude=np.zeros(4))


def test_exclude_bad_indptr():
    raises(ValueError, r"exclude indptr must rise from 0", Q, C, 1, exclude=(np.array([0, 2, 1, 2, 2]), np.array([0, 1])))


def test_exclude_indptr_length():
    raises(ValueError, r"exclude indptr must have length Q\+1 = 5", Q, C, 1, exclude=(np.array([0, 1]), np.array([0])))


def test_groups_come_together():
    raises(ValueError, r"query_groups and candidate_groups come together; candidate_groups is missing",
           Q, C, 1, query_groups=np.zeros(4, int))


def test_groups_wrong_length():
    raises(ValueError, r"candidate_groups must have shape \(6,\)", Q, C, 1, query_groups=np.zeros(4, int),
           candidate_groups=np.zeros(5, int))


def test_groups_not_integers():
    raises(TypeError, r"query_groups must hold integer ids", Q, C, 1, query_groups=np.zeros(4),
           candidate_groups=np.zeros(6, int))


def test_nan_in_candidates_names_the_row():
    bad = C.copy()
    bad[3, 1] = np.nan
    raises(ValueError, r"candidates row 3 contains NaN or inf", Q, bad, 1)


def test_inf_in_fp16_queries_names_the_row():
    bad = Q.astype(np.float16)
    bad[2, 0] = np.inf
    raises(ValueError, r"queries row 2 contains NaN or inf", bad, C, 1)


def test_zero_norm_row_under_cosine():
    bad = C.copy()
    bad[5] = 0
    raises(ValueError, r"candidates row 5 has zero norm", Q, bad, 1, metric="cosine")


def test_unknown_metric():
    raises(ValueError, r"metric must be one of \('dot', 'cosine'\); got 'l2'", Q, C, 1, metric="l2")


def test_unknown_backend():
    raises(ValueError, r"backend must be 'auto' or one of", Q, C, 1, backend="tpu")


def test_unavailable_backend_raises_its_reason(monkeypatch):
    monkeypatch.setitem(backends._FACTORIES, "broken", "hardmine.no_such_module:Backend")
    raises(RuntimeError, r"backend 'broken' is not available: ModuleNotFoundError", Q, C, 1, backend="broken")
    assert "no_such_module" in backends.status()["broken"]


@pytest.mark.parametrize("block_size", [0, (4, 0), -1])
def test_bad_block_size(block_size):
    raises(ValueError, r"block_size(\[\d\])? must be >= 1", Q, C, 1, block_size=block_size)


def test_bad_num_threads():
    raises(ValueError, r"num_threads must be >= 1", Q, C, 1, num_threads=0)


def test_similarity_refuses_huge_outputs(monkeypatch):
    monkeypatch.setattr(engine, "SIMILARITY_MAX_ELEMENTS", 10)
    raises(ValueError, r"use hardmine.topk or hardmine.violations", Q, C, fn=hardmine.similarity)


def test_violations_needs_positives():
    raises(ValueError, r"violations needs positive_scores, positives, or query_groups", Q, C, fn=hardmine.violations)


def test_violations_query_without_positive():
    raises(ValueError, r"positives: query 1 has no positive", Q, C, fn=hardmine.violations,
           positives=[[0], [], [1], [2]])


def test_violations_positive_scores_shape():
    raises(ValueError, r"positive_scores must have shape \(4,\)", Q, C, np.zeros(3), fn=hardmine.violations)


def test_violations_positive_scores_nan():
    raises(ValueError, r"positive_scores row 1 is NaN or inf", Q, C, np.array([0, np.nan, 0, 0]),
           fn=hardmine.violations)


@pytest.mark.parametrize("margin", [float("nan"), "0.2"])
def test_violations_bad_margin(margin):
    with pytest.raises((ValueError, TypeError), match=r"margin must be"):
        hardmine.violations(Q, C, np.zeros(4), margin=margin)


class TestNativeEntryPoints:
    """The bindings check what they are given, so a direct caller cannot crash the process."""

    def call(self, native, **overrides):
        from hardmine import _core

        args = dict(queries=Q, queries_dtype=0, candidates=C, candidates_dtype=0, k=2, query_scales=None,
                    candidate_scales=None, exclude_indptr=None, exclude_indices=None, query_groups=None,
                    candidate_groups=None, out_indices=np.empty((4, 2), np.int64),
                    out_scores=np.empty((4, 2), np.float32))
        args.update(overrides)
        return _core.topk(**args)

    def test_output_shape(self, native):
        with pytest.raises(ValueError, match=r"out_indices has the wrong shape"):
            self.call(native, out_indices=np.empty((4, 3), np.int64))

    def test_output_dtype(self, native):
        with pytest.raises(TypeError, match=r"out_scores must be a writeable C-contiguous float32"):
            self.call(native, out_scores=np.empty((4, 2), np.float64))

    def test_unsorted_exclusions(self, native):
        with pytest.raises(ValueError, match=r"exclude_indices must be sorted within each query; query 0"):
            self.call(native, exclude_indptr=np.array([0, 2, 2, 2, 2]), exclude_indices=np.array([3, 1]))

    def test_out_of_range_exclusions(self, native):
        with pytest.raises(ValueError, match=r"exclude_indices: id 9 of query 0"):
            self.call(native, exclude_indptr=np.array([0, 1, 1, 1, 1]), exclude_indices=np.array([9]))

    def test_dtype_code_mismatch(self, native):
        with pytest.raises(TypeError, match=r"candidates must hold float32"):
            self.call(native, candidates=C.astype(np.float16).view(np.uint16), candidates_dtype=0)

    def test_scales_length(self, native):
        with pytest.raises(ValueError, match=r"query_scales must have length 4"):
            self.call(native, query_scales=np.ones(3, np.float32))
