"""The public engine functions: :func:`topk`, :func:`similarity`, :func:`violations`, :func:`info`."""

from __future__ import annotations

import dataclasses
import platform
from importlib import metadata
from typing import Any, NamedTuple

import numpy as np

from . import _merge as merge
from . import _strategies
from . import _validation as v
from . import backends

#: :func:`similarity` refuses outputs larger than this many scores (1 GiB of float32)
SIMILARITY_MAX_ELEMENTS = 1 << 28

#: rows of (query, positive) pairs gathered at a time to compute positive scores
_PAIR_CHUNK = 1 << 16

#: largest rank window (b - a) that ``random``/``softmax`` keep per query in memory
MAX_SAMPLING_WINDOW = 16384


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


@dataclasses.dataclass(frozen=True)
class MiningStats:
    """What :func:`mine` saw. Pair counts are over (query, candidate) pairs.

    ``removed[name]`` counts the non-positive candidates scoring beyond that
    filter's bound (a candidate may fail several filters; key-excluded ones are
    included); ``key_excluded`` counts non-positive candidates sharing a key with
    one of the query's positives.
    """

    num_queries: int
    num_candidates: int
    positive_pairs: int
    key_excluded: int
    removed: dict[str, int]
    mean_positive_score: float
    mean_negative_score: float
    negatives_returned: int

    def table(self) -> str:
        pairs = self.num_queries * self.num_candidates
        rows = [("queries x candidates", pairs), ("positives", self.positive_pairs)]
        if self.key_excluded:
            rows.append(("sharing a key with a positive", self.key_excluded))
        rows += [(f"beyond {name}", count) for name, count in self.removed.items()]
        rows.append(("negatives returned", self.negatives_returned))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {count:>14,}  {100.0 * count / max(pairs, 1):6.2f}%" for name, count in rows]
        lines.append(f"mean positive score {self.mean_positive_score:.4f}, "
                     f"mean negative score {self.mean_negative_score:.4f}")
        return "\n".join(lines)


class Negatives(NamedTuple):
    """Result of :func:`mine`: ``indices`` (Q, n) int64 and ``scores`` (Q, n) float32
    (best first, -1/-inf padded), ``positive_scores`` (Q,) float32 (the hardest
    positive's score, NaN for a query without positives), ``num_valid`` (Q,) int64
    and ``stats`` (:class:`MiningStats`)."""

    indices: Any
    scores: Any
    positive_scores: Any
    num_valid: Any
    stats: MiningStats


def _like_input(template: Any, *arrays: np.ndarray) -> tuple:
    """Returns results in the library of the input (NumPy in, NumPy out; torch in, torch out)."""
    if type(template).__module__.split(".")[0] == "torch":
        import torch

        return tuple(torch.from_numpy(a) for a in arrays)
    return arrays


def _scan(backend: str, problem: v.Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backend's fused top-k over every query and candidate shard, merged into one exact
    top-k: (indices, scores, per-filter tallies), as for unsharded matrices. Only
    min(k, candidates) columns are computed: past the candidate count there is only padding."""
    engine = backends.get(backend)
    width = max(1, min(k, problem.candidates.rows))
    results = [_scan_candidates(engine, part, width) for part in _query_shards(problem)]
    if len(results) == 1:
        return results[0]
    return tuple(np.concatenate(columns) for columns in zip(*results))


def _query_shards(problem: v.Problem) -> list[v.Problem]:
    """The problem split by query shard (each a problem of its own rows), or itself."""
    if not isinstance(problem.queries.array, v.RowShards):
        return [problem]
    return [v.restrict_queries(problem, start, start + shard.rows, shard) for start, shard in problem.queries.shards()]


def _scan_candidates(engine, problem: v.Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(problem.candidates.array, v.RowShards):
        return engine.topk(problem, k)
    indices, scores, tallies = None, None, 0
    for offset, shard in problem.candidates.shards():
        found, found_scores, counts = engine.topk(v.restrict_candidates(problem, offset, shard), k)
        found = np.where(found >= 0, found + offset, -1)
        tallies = tallies + counts
        if indices is None:
            indices, scores = found, found_scores
        else:  # a running merge keeps memory at two windows however many shards there are
            indices, scores = merge.windows(np.concatenate([indices, found], axis=1),
                                            np.concatenate([scores, found_scores], axis=1), k,
                                            problem.candidate_keys)
    return indices, scores, tallies


def _padded(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) results from narrower ones: -1 / -inf in the missing columns."""
    if indices.shape[1] >= k:
        return indices[:, :k], scores[:, :k]
    out_indices = np.full((indices.shape[0], k), -1, dtype=np.int64)
    out_scores = np.full((indices.shape[0], k), -np.inf, dtype=np.float32)
    out_indices[:, : indices.shape[1]] = indices
    out_scores[:, : indices.shape[1]] = scores
    return out_indices, out_scores


def _unsharded(problem: v.Problem, function: str) -> v.Problem:
    if isinstance(problem.candidates.array, v.RowShards):
        raise TypeError(f"{function} takes candidates as one array; a list of shards is read by topk and mine "
                        f"(concatenate the shards for {function})")
    return problem


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
    v.check_result_size(problem.queries.rows, k, "k")
    indices, scores, _ = _scan(backend, problem, k)
    return TopK(*_like_input(queries, *_padded(indices, scores, k)))


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
    engine = backends.get(backend)
    parts = [engine.similarity(part) for part in _query_shards(_unsharded(problem, "similarity"))]
    return _like_input(queries, parts[0] if len(parts) == 1 else np.concatenate(parts))[0]


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


def _positive_members(problem: v.Problem) -> tuple[np.ndarray, np.ndarray] | None:
    """CSR of every query's positives (ids and group members together), or None."""
    parts = []
    if problem.exclude_indptr is not None:
        parts.append((problem.exclude_indptr, problem.exclude_indices))
    if problem.query_groups is not None:
        parts.append(_group_members(problem.query_groups, problem.candidate_groups))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    rows = np.concatenate([np.repeat(np.arange(problem.queries.rows), np.diff(p[0])) for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    pairs = np.unique(np.stack([rows, ids], axis=1), axis=0)
    indptr = np.zeros(problem.queries.rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=problem.queries.rows), out=indptr[1:])
    return indptr, np.ascontiguousarray(pairs[:, 1])


def _pair_scores(problem: v.Problem, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """float64 score of each (query row, candidate id) pair, gathered in chunks."""
    dots = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], _PAIR_CHUNK):
        stop = min(start + _PAIR_CHUNK, rows.shape[0])
        q = np.asarray(problem.queries.array[rows[start:stop]])
        c = np.asarray(problem.candidates.array[ids[start:stop]])
        if q.dtype not in (np.float32, np.float16):  # bfloat16: einsum cannot cast it on the fly
            q, c = q.astype(np.float32), c.astype(np.float32)
        dots[start:stop] = np.einsum("ij,ij->i", q, c, dtype=np.float64)  # exact products, float64 sums
    if problem.metric == "cosine":
        dots *= problem.query_scales[rows] * problem.candidate_scales[ids]
    return dots


def _positive_scores(problem: v.Problem, indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s_p per query (the smallest score among its positives, NaN without positives) and
    the float64 score of every (query, positive) pair, in CSR order."""
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(problem.queries.rows, dtype=np.int64), counts)
    dots = _pair_scores(problem, rows, indices)
    out = np.full(problem.queries.rows, np.nan, dtype=np.float32)
    has = counts > 0
    if has.any():
        out[has] = np.minimum.reduceat(dots, indptr[:-1][has])
    return out, dots


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
        exclude_name="positives",
    )
    _unsharded(problem, "violations")
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
        if (np.abs(scores) > v.SCORE_LIMIT).any():
            row = int(np.argmax(np.abs(scores) > v.SCORE_LIMIT))
            raise ValueError(f"positive_scores row {row} is {scores[row]:.3g}, beyond the {v.SCORE_LIMIT:.3g} the "
                             f"engine accepts for scores")
    else:
        members = _positive_members(problem)
        if members is None:
            raise ValueError("violations needs positive_scores, positives, or query_groups + candidate_groups")
        counts = np.diff(members[0])
        if (counts == 0).any():
            query = int(np.argmax(counts == 0))
            raise ValueError(
                f"positives: query {query} has no positive; violations needs at least one per query "
                f"(or pass positive_scores)"
            )
        scores = _positive_scores(problem, *members)[0]
    engine = backends.get(backend)
    found = [engine.violations(part, scores[first : first + part.queries.rows], margin)
             for first, part in zip(np.cumsum([0] + [p.queries.rows for p in _query_shards(problem)]),
                                    _query_shards(problem))]
    count, hinge_sum, max_hinge, argmax = (np.concatenate(columns) for columns in zip(*found))
    return Violations(*_like_input(queries, count, hinge_sum, max_hinge, argmax, scores))


def _optional_real(value: Any, name: str) -> float | None:
    return None if value is None else v.real(value, name)


def _rank_window(rank_range: Any, count: int, strategy: str) -> tuple[int, int]:
    if not isinstance(rank_range, (tuple, list)) or len(rank_range) != 2:
        raise TypeError(f"rank_range must be a pair (a, b) with b None or > a; got {rank_range!r}")
    first = 0 if rank_range[0] is None else rank_range[0]
    if isinstance(first, bool) or not isinstance(first, (int, np.integer)):
        raise TypeError(f"rank_range[0] must be an integer; got {type(first).__name__}")
    if first < 0:
        raise ValueError(f"rank_range[0] must be >= 0; got {first}")
    first = int(first)
    if rank_range[1] is None:
        if strategy in ("random", "softmax"):
            raise ValueError(
                f"strategy={strategy!r} samples from a bounded window: give rank_range=(a, b) with "
                f"b - a <= {MAX_SAMPLING_WINDOW}, e.g. rank_range=(10, 100)"
            )
        return first, first + count
    end = v.positive_int(rank_range[1], "rank_range[1]")
    if end <= first:
        raise ValueError(f"rank_range must have a < b; got {tuple(rank_range)!r}")
    if strategy in ("random", "softmax") and end - first > MAX_SAMPLING_WINDOW:
        raise ValueError(f"rank_range window b - a = {end - first} exceeds {MAX_SAMPLING_WINDOW} for sampling")
    if strategy in ("top", "semihard"):
        end = min(end, first + count)  # nothing past the first `count` window ranks can be picked
    return first, end


def _key_exclusions(keys: np.ndarray, members: tuple[np.ndarray, np.ndarray] | None, num_queries: int):
    """Per query, the sorted distinct keys of its positives (CSR)."""
    if members is None:
        return np.zeros(num_queries + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    indptr, ids = members
    rows = np.repeat(np.arange(num_queries, dtype=np.int64), np.diff(indptr))
    pairs = np.unique(np.stack([rows, keys[ids]], axis=1), axis=0) if ids.size else np.zeros((0, 2), np.int64)
    key_indptr = np.zeros(num_queries + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=num_queries), out=key_indptr[1:])
    return key_indptr, np.ascontiguousarray(pairs[:, 1])


def mine(
    queries: Any,
    candidates: Any,
    *,
    positives: Any = None,
    query_groups: Any = None,
    candidate_groups: Any = None,
    num_negatives: int = 5,
    strategy: str = "top",
    rank_range: tuple[int | None, int | None] = (0, None),
    margin: float | None = None,
    relative_margin: float | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    temperature: float | None = None,
    exclude_keys: Any = None,
    clusters: Any = None,
    seed: int = 0,
    query_offset: int = 0,
    metric: str = "dot",
    backend: str = "auto",
    block_size: int | tuple[int, int] | None = None,
    num_threads: int | None = None,
    check_finite: bool = True,
    verbose: bool = False,
) -> Negatives:
    """Hard negatives per query: filtered, ranked and picked inside the blocked engine.

    A candidate is an admissible negative for query q (positive score s_p, the
    smallest score among its positives) when all given filters hold: it is not a
    positive; with ``exclude_keys`` it shares no key with a positive and is the
    best-scoring candidate of its key; ``s <= max_score``; ``s >= min_score``;
    ``s <= s_p - margin``; ``s <= s_p - |s_p| * relative_margin``. Admissible
    negatives are ranked by score (ties by the smaller index) and
    ``rank_range=(a, b)`` keeps ranks ``a <= r < b``. Inside that window:

    - ``top``: the ``num_negatives`` best;
    - ``random``: drawn uniformly without replacement (``b`` required);
    - ``softmax``: drawn without replacement with P proportional to exp(s / temperature) (``b`` required);
    - ``semihard`` (FaceNet): the best with ``s_p - margin < s < s_p``. The band
      acts as a filter *before* ranking (``margin`` sets the band here, it is not
      also the upper filter), so ``rank_range`` counts semi-hard negatives;
    - ``cluster`` (Tagami et al. 2024): drawn uniformly among the reliable negatives
      that ``clusters`` (a :func:`hardmine.cluster.reliability`, built once over
      the whole query and candidate sets) defines, then ordered by score; the score
      filters, ``rank_range`` and ``exclude_keys`` do not apply to it.

    A query without positives has ``positive_scores`` NaN and no admissible
    negative under a positive-aware filter (``margin``, ``relative_margin``,
    ``semihard``). Draws depend only on ``seed``, the query row and the candidate
    id: the same for every backend, block size and thread count. ``query_offset``
    is the row number of ``queries[0]`` in a larger query set: mining that set in
    pieces (each with its offset) draws what mining it at once draws. ``random`` and
    ``softmax`` keep ``b`` candidates per query in memory (``b - a`` at most
    ``MAX_SAMPLING_WINDOW`` = 16384).

    Returns
    -------
    Negatives
        ``indices``/``scores`` (Q, num_negatives), best first, -1/-inf padded;
        ``positive_scores`` (Q,); ``num_valid`` (Q,); ``stats`` (how many
        candidates each filter removed, mean scores), printed as a table with
        ``verbose=True``.

    Examples
    --------
    >>> import numpy as np, hardmine
    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> c = np.array([[1.0, 0.0], [0.99, 0.1], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    >>> r = hardmine.mine(q, c, positives=np.array([0]), num_negatives=2, relative_margin=0.05)
    >>> r.indices.tolist(), int(r.num_valid[0])
    ([[2, 3]], 2)
    """
    count = v.positive_int(num_negatives, "num_negatives")
    if strategy not in _strategies.STRATEGIES:
        raise ValueError(f"strategy must be one of {_strategies.STRATEGIES}; got {strategy!r}")
    first, end = _rank_window(rank_range, count, strategy)
    margin = _optional_real(margin, "margin")
    relative_margin = _optional_real(relative_margin, "relative_margin")
    max_score = _optional_real(max_score, "max_score")
    min_score = _optional_real(min_score, "min_score")
    temperature = _optional_real(temperature, "temperature")
    if strategy == "softmax" and (temperature is None or temperature <= 0):
        raise ValueError(f"strategy='softmax' needs temperature > 0; got {temperature!r}")
    if strategy != "softmax" and temperature is not None:
        raise ValueError(f"temperature only applies to strategy='softmax'; got strategy={strategy!r}")
    if strategy == "semihard" and (margin is None or margin <= 0):
        raise ValueError(f"strategy='semihard' needs margin > 0 (the band s_p - margin < s < s_p); got {margin!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer; got {type(seed).__name__}")
    if isinstance(query_offset, bool) or not isinstance(query_offset, (int, np.integer)):
        raise TypeError(f"query_offset must be an integer; got {type(query_offset).__name__}")
    if query_offset < 0:
        raise ValueError(f"query_offset must be >= 0; got {query_offset}")

    if (strategy == "cluster") != (clusters is not None):
        raise ValueError("strategy='cluster' and clusters= (a hardmine.cluster.reliability) come together")
    if strategy == "cluster":
        given = [name for name, value in (("margin", margin), ("relative_margin", relative_margin),
                                          ("max_score", max_score), ("min_score", min_score),
                                          ("exclude_keys", exclude_keys)) if value is not None]
        if given or tuple(rank_range) != (0, None):
            raise ValueError(f"strategy='cluster' draws among the reliable negatives; "
                             f"{', '.join(given) or 'rank_range'} does not apply to it")

    problem = v.problem(
        queries, candidates, metric_name=metric, exclude=positives, query_groups=query_groups,
        candidate_groups=candidate_groups, block=block_size, threads=num_threads, check_finite=check_finite,
        exclude_name="positives",
    )
    v.check_result_size(problem.queries.rows, count, "num_negatives")
    num_queries = problem.queries.rows
    members = _positive_members(problem)
    if strategy == "cluster":
        return _mine_clusters(queries, problem, members, clusters, count, int(seed), int(query_offset), verbose)
    positive_aware = strategy == "semihard" or margin is not None or relative_margin is not None
    if members is None and positive_aware:
        raise ValueError("margin, relative_margin and strategy='semihard' need positives or query/candidate groups")
    if members is not None:
        positive_scores, pair_scores = _positive_scores(problem, *members)
    else:
        positive_scores, pair_scores = np.full(num_queries, np.nan, np.float32), None

    s_p = positive_scores.astype(np.float64)
    upper = np.full(num_queries, np.inf)
    lower = np.full(num_queries, -np.inf)
    if max_score is not None:
        upper = np.minimum(upper, max_score)
    if min_score is not None:
        lower = np.maximum(lower, min_score)
    if strategy == "semihard":
        upper = np.minimum(upper, s_p)
        lower = np.maximum(lower, s_p - margin)
    elif margin is not None:
        upper = np.minimum(upper, s_p - margin)
    if relative_margin is not None:
        upper = np.minimum(upper, s_p - np.abs(s_p) * relative_margin)
    bounded_above = max_score is not None or positive_aware
    bounded_below = min_score is not None or strategy == "semihard"

    keys = None
    if exclude_keys is not None:
        keys = np.ascontiguousarray(v._int_array(exclude_keys, "exclude_keys"), dtype=np.int64)
        if keys.shape != (problem.candidates.rows,):
            raise ValueError(
                f"exclude_keys must have shape ({problem.candidates.rows},), one key per candidate; got {keys.shape}"
            )
    key_csr = _key_exclusions(keys, members, num_queries) if keys is not None else (None, None)
    filters = _filter_tallies(max_score, min_score, margin, relative_margin, strategy, s_p)
    problem = dataclasses.replace(
        problem,
        candidate_keys=keys,
        excluded_key_indptr=key_csr[0],
        excluded_key_indices=key_csr[1],
        upper_bounds=upper.astype(np.float32) if bounded_above else None,
        lower_bounds=lower.astype(np.float32) if bounded_below else None,
        exclusive_bounds=strategy == "semihard",
        count_bounds=tuple(bound for _, bound, _ in filters),
        count_below=tuple(below for _, _, below in filters),
    )
    window_indices, window_scores, tallies = _scan(backend, problem, end)
    indices, scores = _strategies.select(
        strategy, window_indices[:, first:], window_scores[:, first:], count, int(seed), temperature,
        int(query_offset),
    )
    num_valid = (indices >= 0).sum(axis=1).astype(np.int64)
    stats = _mining_stats(problem, members, pair_scores, keys, key_csr, filters, tallies, positive_scores, scores,
                          num_valid)
    if verbose:
        print(stats.table())
    return Negatives(*_like_input(queries, indices, scores, positive_scores, num_valid), stats)


def _mine_clusters(queries, problem, members, clusters, count, seed, query_offset, verbose) -> Negatives:
    from . import cluster

    num_queries = problem.queries.rows
    if members is None:
        raise ValueError("strategy='cluster' needs positives or query/candidate groups")
    rows = query_offset + np.arange(num_queries)
    if num_queries and clusters.query_labels.size < rows[-1] + 1:
        raise ValueError(f"clusters covers {clusters.query_labels.size} queries; these are rows "
                         f"{query_offset}..{query_offset + num_queries - 1} (query_offset + row)")
    if clusters.candidate_labels.size != problem.candidates.rows:
        raise ValueError(f"clusters covers {clusters.candidate_labels.size} candidates; got {problem.candidates.rows}")
    drawn = cluster.draw_reliable(clusters, members, rows, count, seed)
    valid = drawn >= 0
    scores = np.full(drawn.shape, -np.inf, dtype=np.float32)
    query_of = np.broadcast_to(np.arange(num_queries)[:, None], drawn.shape)[valid]
    scores[valid] = _pair_scores(problem, query_of, drawn[valid]).astype(np.float32)
    order = np.lexsort((np.where(valid, drawn, np.iinfo(np.int64).max), -scores.astype(np.float64)), axis=1)
    indices = np.take_along_axis(drawn, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    positive_scores = _positive_scores(problem, *members)[0]
    num_valid = valid.sum(axis=1).astype(np.int64)
    valid_scores = scores[scores > -np.inf]
    stats = MiningStats(
        num_queries=num_queries, num_candidates=problem.candidates.rows, positive_pairs=int(members[1].size),
        key_excluded=0, removed={},
        mean_positive_score=float(np.nanmean(positive_scores)) if np.isfinite(positive_scores).any() else float("nan"),
        mean_negative_score=float(valid_scores.mean()) if valid_scores.size else float("nan"),
        negatives_returned=int(num_valid.sum()),
    )
    if verbose:
        print(stats.table())
    return Negatives(*_like_input(queries, indices, scores, positive_scores, num_valid), stats)


def _filter_tallies(max_score, min_score, margin, relative_margin, strategy, s_p):
    """(name, (Q,) float32 bound, count below?) for every active filter."""
    num_queries = s_p.shape[0]
    out = []
    if max_score is not None:
        out.append(("max_score", np.full(num_queries, max_score), False))
    if min_score is not None:
        out.append(("min_score", np.full(num_queries, min_score), True))
    if strategy == "semihard":
        # outside the band: s >= s_p, or s <= s_p - margin
        out.append(("semi-hard band (above)", np.nextafter(s_p.astype(np.float32), -np.inf), False))
        out.append(("semi-hard band (below)", np.nextafter((s_p - margin).astype(np.float32), np.inf), True))
    elif margin is not None:
        out.append(("margin", s_p - margin, False))
    if relative_margin is not None:
        out.append(("relative_margin", s_p - np.abs(s_p) * relative_margin, False))
    return [(name, np.ascontiguousarray(bound, dtype=np.float32), below) for name, bound, below in out]


def _mining_stats(problem, members, pair_scores, keys, key_csr, filters, tallies, positive_scores, scores,
                  num_valid):
    removed = {}
    if members is not None:
        rows = np.repeat(np.arange(problem.queries.rows), np.diff(members[0]))
        pair = pair_scores.astype(np.float32)
    for f, (name, bound, below) in enumerate(filters):
        total = int(tallies[:, f].sum())
        if members is not None:  # the tallies saw every candidate; positives are not negatives
            total -= int(((pair < bound[rows]) if below else (pair > bound[rows])).sum())
        removed[name] = total
    positive_pairs = 0 if members is None else int(members[1].size)
    key_excluded = 0
    if keys is not None and members is not None:
        distinct, per_key = np.unique(keys, return_counts=True)
        with_key = per_key[np.searchsorted(distinct, key_csr[1])].sum()
        key_excluded = int(with_key) - positive_pairs
    valid = scores[np.asarray(scores) > -np.inf]
    return MiningStats(
        num_queries=problem.queries.rows,
        num_candidates=problem.candidates.rows,
        positive_pairs=positive_pairs,
        key_excluded=key_excluded,
        removed=removed,
        mean_positive_score=float(np.nanmean(positive_scores)) if np.isfinite(positive_scores).any() else float("nan"),
        mean_negative_score=float(valid.mean()) if valid.size else float("nan"),
        negatives_returned=int(num_valid.sum()),
    )


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
