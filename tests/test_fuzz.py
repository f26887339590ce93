"""Property tests: random shapes, dtypes, strides and ids through the public API.

Every case either returns the reference answer or raises a clean ValueError /
TypeError; never a crash or a silently wrong result.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hardmine
from conftest import assert_topk_matches, available_engine_backends, scores64, tolerance

DTYPES = [np.float32, np.float16, np.float64, np.int32, np.bool_]
LAYOUTS = ["c", "fortran", "rows_step", "cols_step", "reversed"]


def layout(array: np.ndarray, name: str) -> np.ndarray:
    if name == "fortran":
        return np.asfortranarray(array)
    if name == "rows_step":
        return np.repeat(array, 2, axis=0)[::2]
    if name == "cols_step":
        return np.repeat(array, 3, axis=1)[:, ::3]
    if name == "reversed":
        return array[::-1, ::-1].copy()[::-1, ::-1]
    return array


@st.composite
def cases(draw):
    num_queries = draw(st.integers(0, 12))
    num_candidates = draw(st.integers(0, 40))
    dim = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = draw(st.sampled_from(["gaussian", "integers"]))
    make = (lambda n: rng.standard_normal((n, dim))) if values == "gaussian" else (
        lambda n: rng.integers(-2, 3, (n, dim)).astype(np.float64))
    queries = layout(make(num_queries).astype(draw(st.sampled_from(DTYPES))), draw(st.sampled_from(LAYOUTS)))
    candidates = layout(make(num_candidates).astype(draw(st.sampled_from(DTYPES))), draw(st.sampled_from(LAYOUTS)))
    k = draw(st.integers(-1, 45))
    exclude = None
    if draw(st.booleans()) and num_queries:
        exclude = rng.integers(-1, num_candidates + 1, size=num_queries)
    block = draw(st.one_of(st.none(), st.tuples(st.integers(1, 9), st.integers(1, 17))))
    return queries, candidates, k, exclude, block


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), backend=st.sampled_from(available_engine_backends()))
def test_random_inputs_give_the_reference_answer_or_a_clean_error(case, backend):
    queries, candidates, k, exclude, block = case
    valid = (
        queries.dtype.kind == "f" and candidates.dtype.kind == "f" and k >= 1
        and (exclude is None or ((exclude >= 0) & (exclude < candidates.shape[0])).all())
    )
    try:
        result = hardmine.topk(queries, candidates, k, exclude=exclude, backend=backend, block_size=block)
    except (ValueError, TypeError):
        assert not valid, "a valid input was refused"
        return
    assert valid, "an invalid input was accepted"
    reference = hardmine.topk(queries, candidates, k, exclude=exclude, backend="reference")
    mask = np.zeros((queries.shape[0], candidates.shape[0]), dtype=bool)
    if exclude is not None:
        mask[np.arange(queries.shape[0]), exclude] = True
    half = np.float16 in (queries.dtype, candidates.dtype)
    assert_topk_matches(result, reference, scores64(queries, candidates), mask,
                        tolerance(queries, candidates, "dot", half))
