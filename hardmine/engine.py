"""The engine's public functions: :func:`topk`, :func:`similarity` and :func:`violations`.
Inputs are checked once (:mod:`hardmine._validation`), scanned blockwise by a backend over
every shard (:mod:`hardmine._scan`) and returned in the caller's array library."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from . import _positives, _precision, _scan, backends
from . import _validation as v
from ._interop import like_input, to_host
from ._rows import SCORE_LIMIT

#: :func:`similarity` refuses outputs larger than this many scores (1 GiB of float32)
SIMILARITY_MAX_ELEMENTS = 1 << 28


class TopK(NamedTuple):
    """Result of :func:`topk`: ``indices`` (Q, k) int64 and ``scores`` (Q, k) float32."""

    indices: Any
    scores: Any


class Violations(NamedTuple):
    """Result of :func:`violations`, one entry per query.

    ``count`` (int64), ``hinge_sum`` (float64), ``max`` (float32, the hardest
    negative's hinge), ``argmax`` (int64, its index, -1 if none),
    ``positive_scores`` (float32, the s_p used).
    """

    count: Any
    hinge_sum: Any
    max: Any
    argmax: Any
    positive_scores: Any


def topk(
    queries: Any,
    candidates: Any,
    k: int,
    *,
    metric: str = "dot",
    exclude: Any = None,
    query_groups: Any = None,
    candidate_groups: Any = None,
    backend: str = "auto",
    block_size: int | tuple[int, int] | None = None,
    num_threads: int | None = None,
    check_finite: bool = True,
    precision: str = "fp32",
) -> TopK:
    """Exact top-k candidates per query, never materialising the (Q, C) matrix.

    Parameters
    ----------
    queries, candidates : array_like, shape (Q, d) and (C, d)
        float32, float16 or bfloat16 (ml_dtypes) embeddings; NumPy arrays, memory
        maps or torch CPU tensors, read in place whatever their strides. float64
        is converted to float32. ``candidates`` may also be a list of (C_i, d)
        arrays of one dtype (shards, e.g. memory maps of ``.npy`` files): the result
        is that of their row-wise concatenation, which is never built.
    k : int
        Results per query (>= 1). Rows with fewer than ``k`` admissible candidates
        are padded with index -1 and score -inf; ``k`` may exceed the candidate count
        (only the candidates are scanned), but a padded (Q, k) result that would not
        fit in memory is refused, naming its size.
    metric : {"dot", "cosine"}
        Cosine divides by the row norms on the fly (no normalised copy).
    exclude : array_like, optional
        Candidate ids that may not be returned: ``(Q,)`` one per query, ``(Q, m)``,
        a tuple ``(indptr, indices)`` (CSR), a scipy.sparse matrix or a list of lists.
    query_groups, candidate_groups : array_like of int, optional
        Query q never gets a candidate whose group equals ``query_groups[q]``.
    backend : str
        ``"auto"`` (``cpu``, else ``numba``), ``"cpu"``, ``"numba"`` or ``"reference"``.
    block_size : int or (int, int), optional
        ``(query_rows, candidate_rows)`` per score tile; chosen from the cache size by default.
    num_threads : int, optional
        Worker threads (default: all cores).
    check_finite : bool
        Scan the inputs first (default): NaN/inf rows are refused, naming the first, and so are
        dot products that could overflow float32. With False the scan is skipped (trusted data):
        a candidate scoring NaN or -inf is never returned (-inf is the padding score), one
        scoring +inf ranks first.
    precision : {"fp32", "bf16", "int8", "auto"}
        How candidates are screened; the answer is the same. ``"bf16"`` / ``"int8"`` (``cpu``
        backend): both sides quantised once (bf16 codes under a power-of-two row scale, or int8
        codes), every low-precision score carries a certified error bound, and each query's
        shortlist (the candidates whose upper bound reaches its k-th best lower bound) is
        re-scored exactly, so indices equal the exact top-k (ties by index) and scores are
        float64 sums rounded to float32 (docs/precision.md). ``"auto"`` takes bf16 where the
        CPU has AVX512_BF16, else int8 where it has AVX-512 VNNI, for Q >= 1024 and k <= 256
        (where they win), else fp32. The default stays ``"fp32"``: every path gives the exact
        top-k, but the bytes of the scores (float32 sums vs float64 sums rounded) differ.

    Returns
    -------
    TopK
        ``indices`` (Q, k) int64 and ``scores`` (Q, k) float32, each row sorted by
        score descending, ties by the smaller candidate index.

    Examples
    --------
    >>> import numpy as np, hardmine
    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> c = np.array([[0.9, 0.1], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> hardmine.topk(q, c, 2, exclude=np.array([1])).indices
    array([[0, 2]])
    """
    k = v.positive_int(k, "k")
    precision = _precision.check(precision)
    problem = v.problem(
        queries, candidates, metric_name=metric, exclude=exclude, query_groups=query_groups,
        candidate_groups=candidate_groups, block=block_size, threads=num_threads, check_finite=check_finite,
    )
    problem = replace(problem, precision=_precision.resolve(precision, problem, backend, k=k))
    v.check_result_size(problem.queries.rows, k, "k")
    indices, scores, _, _ = _scan.scan(backend, problem, k)
    return TopK(*like_input(queries, *_scan.padded(indices, scores, k)))


def similarity(
    queries: Any,
    candidates: Any,
    *,
    metric: str = "dot",
    backend: str = "auto",
    block_size: int | tuple[int, int] | None = None,
    num_threads: int | None = None,
    check_finite: bool = True,
) -> Any:
    """The full (Q, C) float32 score matrix, for small inputs and tests.

    Refuses outputs of more than ``SIMILARITY_MAX_ELEMENTS`` (2**28) scores;
    use :func:`topk` or :func:`violations`, which never build the matrix.

    Examples
    --------
    >>> import numpy as np, hardmine
    >>> x = np.eye(2, dtype=np.float32)
    >>> hardmine.similarity(x, 2 * x, metric="cosine")
    array([[1., 0.],
           [0., 1.]], dtype=float32)
    """
    problem = v.problem(
        queries, candidates, metric_name=metric, block=block_size, threads=num_threads, check_finite=check_finite
    )
    size = problem.queries.rows * problem.candidates.rows
    if size > SIMILARITY_MAX_ELEMENTS:
        raise ValueError(
            f"similarity would build a {problem.queries.rows} x {problem.candidates.rows} matrix "
            f"({size} scores > {SIMILARITY_MAX_ELEMENTS}); use hardmine.topk or hardmine.violations, "
            f"which stream over blocks"
        )
    engine = backends.get(backend, device=problem.device, precision=problem.precision)
    parts = [engine.similarity(part) for part in _scan.query_shards(_scan.unsharded(problem, "similarity"))]
    return like_input(queries, parts[0] if len(parts) == 1 else np.concatenate(parts))[0]


def violations(
    queries: Any,
    candidates: Any,
    positive_scores: Any = None,
    *,
    positives: Any = None,
    query_groups: Any = None,
    candidate_groups: Any = None,
    margin: float = 0.2,
    metric: str = "dot",
    backend: str = "auto",
    block_size: int | tuple[int, int] | None = None,
    num_threads: int | None = None,
    check_finite: bool = True,
    precision: str = "fp32",
) -> Violations:
    """Triplet margin violations per query in one blocked pass.

    With s_p the query's positive score (several positives: the smallest) and j
    ranging over every candidate that is not a positive:
    ``count = #{j : s_j > s_p - margin}``, ``hinge_sum = sum_j max(0, margin + s_j - s_p)``,
    ``max``/``argmax`` = the hinge and index of the highest-scoring such j
    (VSE++ max violation; ties by the smaller index).

    Parameters
    ----------
    positive_scores : array_like (Q,), optional
        s_p per query. Computed from ``positives`` or the groups when omitted.
    positives : array_like, optional
        Positive candidate ids per query, in any form :func:`topk` accepts for ``exclude``.
    query_groups, candidate_groups : array_like of int, optional
        Every candidate of the query's group is a positive.
    margin : float
        The triplet margin m (default 0.2, as in VSE++).
    precision : {"fp32", "bf16", "int8", "auto"}
        As in :func:`topk`, the same answer: with ``"bf16"`` or ``"int8"`` the hardest negative is the
        certified top-1 and every candidate that may violate the margin is re-scored exactly,
        so it pays where violators are few (a trained model); a query with more possible
        violators than the shortlist cap runs on fp32. ``"auto"`` stays on fp32 here: the
        violator counts are unknown before the scan.

    Examples
    --------
    >>> import numpy as np, hardmine
    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> c = np.array([[1.0, 0.0], [0.9, 0.0], [0.1, 0.0]], dtype=np.float32)
    >>> r = hardmine.violations(q, c, positives=np.array([0]), margin=0.2)
    >>> int(r.count[0]), int(r.argmax[0])
    (1, 1)
    """
    margin = v.real(margin, "margin")
    precision = _precision.check(precision)
    problem = v.problem(
        queries, candidates, metric_name=metric, exclude=positives, query_groups=query_groups,
        candidate_groups=candidate_groups, block=block_size, threads=num_threads, check_finite=check_finite,
        exclude_name="positives",
    )
    _scan.unsharded(problem, "violations")
    num_queries = problem.queries.rows
    if positive_scores is not None:
        scores = np.asarray(to_host(positive_scores))
        if scores.dtype.kind not in "fiu" or scores.dtype == np.bool_:
            raise TypeError(f"positive_scores must be numeric; got dtype {scores.dtype}")
        if scores.shape != (num_queries,):
            raise ValueError(f"positive_scores must have shape ({num_queries},); got {scores.shape}")
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        if not np.isfinite(scores).all():
            row = int(np.argmin(np.isfinite(scores)))
            raise ValueError(f"positive_scores row {row} is NaN or inf")
        if (np.abs(scores) > SCORE_LIMIT).any():
            row = int(np.argmax(np.abs(scores) > SCORE_LIMIT))
            raise ValueError(f"positive_scores row {row} is {scores[row]:.3g}, beyond the {SCORE_LIMIT:.3g} the "
                             f"engine accepts for scores")
    else:
        members = _positives.positive_members(problem)
        if members is None:
            raise ValueError("violations needs positive_scores, positives, or query_groups + candidate_groups")
        counts = np.diff(members[0])
        if (counts == 0).any():
            query = int(np.argmax(counts == 0))
            raise ValueError(
                f"positives: query {query} has no positive; violations needs at least one per query "
                f"(or pass positive_scores)"
            )
        scores = _positives.positive_scores(problem, *members)[0]
    if precision != "auto":  # (auto stays fp32 here: see above)
        problem = replace(problem, precision=_precision.resolve(precision, problem, backend, k=1))
    engine = backends.get(backend, device=problem.device, precision=problem.precision)
    parts = _scan.query_shards(problem)
    firsts = np.cumsum([0] + [part.queries.rows for part in parts])
    found = [engine.violations(part, scores[first : first + part.queries.rows], margin)
             for first, part in zip(firsts, parts)]
    count, hinge_sum, max_hinge, argmax = (np.concatenate(columns) for columns in zip(*found))
    return Violations(*like_input(queries, count, hinge_sum, max_hinge, argmax, scores))
