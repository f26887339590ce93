"""The public engine functions: :func:`topk`, :func:`similarity`, :func:`violations`, :func:`info`."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any, NamedTuple

import numpy as np

from . import _validation as v
from . import backends

#: :func:`similarity` refuses outputs larger than this many scores (1 GiB of float32)
SIMILARITY_MAX_ELEMENTS = 1 << 28

#: rows of (query, positive) pairs gathered at a time to compute positive scores
_PAIR_CHUNK = 1 << 16


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


def _like_input(template: Any, *arrays: np.ndarray) -> tuple:
    """Returns results in the library of the input (NumPy in, NumPy out; torch in, torch out)."""
    if type(template).__module__.split(".")[0] == "torch":
        import torch

        return tuple(torch.from_numpy(a) for a in arrays)
    return arrays


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
) -> TopK:
    """Exact top-k candidates per query, never materialising the (Q, C) matrix.

    Parameters
    ----------
    queries, candidates : array_like, shape (Q, d) and (C, d)
        float32, float16 or bfloat16 (ml_dtypes) embeddings; NumPy arrays, memory
        maps or torch CPU tensors, read in place whatever their strides. float64
        is converted to float32.
    k : int
        Results per query (>= 1). Rows with fewer than ``k`` admissible candidates
        are padded with index -1 and score -inf.
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
        Reject NaN/inf rows (default). With False, such candidates score NaN and are never returned.

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
    problem = v.problem(
        queries, candidates, metric_name=metric, exclude=exclude, query_groups=query_groups,
        candidate_groups=candidate_groups, block=block_size, threads=num_threads, check_finite=check_finite,
    )
    indices, scores = backends.get(backend).topk(problem, k)
    return TopK(*_like_input(queries, indices, scores))


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
    return _like_input(queries, backends.get(backend).similarity(problem))[0]


def _group_members(query_groups: np.ndarray, candidate_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the candidates sharing each query's group."""
    order = np.argsort(candidate_groups, kind="stable")
    sorted_groups = candidate_groups[order]
    left = np.searchsorted(sorted_groups, query_groups, side="left")
    counts = np.searchsorted(sorted_groups, query_groups, side="right") - left
    indptr = np.zeros(query_groups.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    offsets = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1] - left, counts)
    return indptr, order[offsets]


def _positive_scores(problem: v.Problem, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """s_p per query: the smallest score among its positives, float64 dot products."""
    counts = np.diff(indptr)
    if counts.size and (counts == 0).any():
        query = int(np.argmax(counts == 0))
        raise ValueError(
            f"positives: query {query} has no positive; violations needs at least one per query "
            f"(or pass positive_scores)"
        )
    rows = np.repeat(np.arange(problem.queries.rows, dtype=np.int64), counts)
    dots = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], _PAIR_CHUNK):
        stop = min(start + _PAIR_CHUNK, rows.shape[0])
        q = np.asarray(problem.queries.array[rows[start:stop]]).astype(np.float64)
        c = np.asarray(problem.candidates.array[indices[start:stop]]).astype(np.float64)
        dots[start:stop] = np.einsum("ij,ij->i", q, c)
    if problem.metric == "cosine":
        dots *= problem.query_scales[rows] * problem.candidate_scales[indices]
    if rows.shape[0] == 0:
        return np.zeros(problem.queries.rows, dtype=np.float32)
    return np.minimum.reduceat(dots, indptr[:-1]).astype(np.float32)


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
    problem = v.problem(
        queries, candidates, metric_name=metric, exclude=positives, query_groups=query_groups,
        candidate_groups=candidate_groups, block=block_size, threads=num_threads, check_finite=check_finite,
    )
    num_queries = problem.queries.rows
    if positive_scores is not None:
        scores = np.asarray(positive_scores)
        if scores.dtype.kind not in "fiu" or scores.dtype == np.bool_:
            raise TypeError(f"positive_scores must be numeric; got dtype {scores.dtype}")
        if scores.shape != (num_queries,):
            raise ValueError(f"positive_scores must have shape ({num_queries},); got {scores.shape}")
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        if not np.isfinite(scores).all():
            row = int(np.argmin(np.isfinite(scores)))
            raise ValueError(f"positive_scores row {row} is NaN or inf")
    elif problem.exclude_indptr is not None:
        scores = _positive_scores(problem, problem.exclude_indptr, problem.exclude_indices)
    elif problem.query_groups is not None:
        scores = _positive_scores(problem, *_group_members(problem.query_groups, problem.candidate_groups))
    else:
        raise ValueError("violations needs positive_scores, positives, or query_groups + candidate_groups")
    count, hinge_sum, max_hinge, argmax = backends.get(backend).violations(problem, scores, margin)
    return Violations(*_like_input(queries, count, hinge_sum, max_hinge, argmax, scores))


def _cuda_status() -> dict[str, Any]:
    try:
        from . import _cuda
    except ImportError as error:
        return {"built": False, "reason": f"_cuda module absent ({error})"}
    count, reason = _cuda.device_count()
    return {
        "built": True,
        "architectures": _cuda.CUDA_ARCHITECTURES,
        "runtime_version": _cuda.runtime_version(),
        "devices": count,
        "reason": reason or None,
    }


def info(print_result: bool = True) -> dict[str, Any]:
    """Version, backends (with the reason each missing one failed) and build facts.

    Printed as a short report unless ``print_result=False``; always returned as a dict.
    """
    try:
        version = metadata.version("hardmine")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    status = backends.status()
    build = None
    if status.get("cpu") is None:
        build = dict(backends.get("cpu").build_info)
    facts = {
        "version": version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "backends": status,
        "cpu_build": build,
        "cuda": _cuda_status(),
    }
    if print_result:
        print(format_info(facts))
    return facts


def format_info(facts: dict[str, Any]) -> str:
    lines = [f"hardmine {facts['version']} (Python {facts['python']}, NumPy {facts['numpy']})", "backends:"]
    for name, reason in facts["backends"].items():
        lines.append(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    cuda = facts["cuda"]
    if not cuda["built"]:
        lines.append(f"  {'cuda':<10} unavailable: {cuda['reason']}")
    elif cuda["devices"] == 0:
        lines.append(f"  {'cuda':<10} module built ({cuda['architectures']}), no usable device: {cuda['reason']}")
    else:
        lines.append(f"  {'cuda':<10} module built ({cuda['architectures']}), {cuda['devices']} device(s); "
                     "GPU top-k kernels not in this version")
    build = facts["cpu_build"]
    if build:
        lines.append("cpu build:")
        for key in ("blas", "openmp", "max_threads", "simd", "compiler", "cuda_reason"):
            lines.append(f"  {key:<12} {build[key]}")
    return "\n".join(lines)
