"""``mine`` as a pipeline of named steps (SPEC 5.2): options -> checked inputs -> positives
and their exact scores -> filters -> the admissible rank window from the engine -> the
strategy's pick -> statistics -> results in the caller's array library."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from .. import _positives, _precision, _scan, cluster
from .. import _validation as v
from .._draws import Rule
from .._interop import like_input
from .._problem import Problem
from . import filters
from .options import MiningOptions, mining_options
from .stats import MiningStats, cluster_stats, mining_stats
from .strategies import WINDOW_SAMPLERS, select

POSITIVES_NEEDED = "margin, relative_margin and strategy='semihard' need positives or query/candidate groups"


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
    precision: str = "fp32",
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
    - ``random``: drawn uniformly without replacement;
    - ``softmax``: drawn without replacement with P proportional to exp(s / temperature);
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
    ``softmax`` take any window: ``rank_range=(a, None)`` (every admissible candidate from
    rank ``a`` on) is drawn in one pass keeping ``a + num_negatives`` entries per query; a
    bounded ``(a, b)`` window keeps its ``b`` best per query (a ``b`` at or past the candidate
    count is drawn as the open window). Both draw the same: the ``num_negatives`` highest
    seeded priorities (``-u`` uniform, ``s / temperature + Gumbel(u)`` softmax), where
    ``u`` depends on the seed, the query row and the candidate id (its key under
    ``exclude_keys``).

    ``precision="bf16"`` or ``"int8"`` (or ``"auto"``, see :func:`hardmine.topk`) screens the
    candidates with certified low-precision scores and re-scores exactly what the bound leaves
    uncertain — the window, the filters and their counts apply to the exact scores, so the
    negatives are the exact engine's. Every window strategy is served, with or without
    ``exclude_keys``; open ``random`` draws score only the candidates they visit, open
    ``softmax`` draws bound each priority from the screen. A query whose filter bound lies amid
    many scores falls back to fp32; ``stats.shortlists`` says how much a ranked window re-scored
    (docs/precision.md).

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
    options = mining_options(
        num_negatives=num_negatives, strategy=strategy, rank_range=rank_range, margin=margin,
        relative_margin=relative_margin, max_score=max_score, min_score=min_score, temperature=temperature,
        seed=seed, query_offset=query_offset, exclude_keys_given=exclude_keys is not None,
        clusters_given=clusters is not None,
    )
    precision = _precision.check(precision)
    problem = _inputs(queries, candidates, positives, query_groups, candidate_groups, metric, block_size,
                      num_threads, check_finite, options)
    members = _positives.positive_members(problem)
    if options.strategy == "cluster":
        indices, scores, positive_scores, stats = _cluster_draw(problem, members, clusters, options)
    else:
        indices, scores, positive_scores, stats = _window_mine(problem, members, exclude_keys, options, backend,
                                                               precision)
    if verbose:
        print(stats.table())
    num_valid = (indices >= 0).sum(axis=1).astype(np.int64)
    return Negatives(*like_input(queries, indices, scores, positive_scores, num_valid), stats)


def _inputs(queries, candidates, positives, query_groups, candidate_groups, metric, block_size, num_threads,
            check_finite, options: MiningOptions) -> Problem:
    """Step 1: the checked inputs, and a result size that fits in memory."""
    problem = v.problem(
        queries, candidates, metric_name=metric, exclude=positives, query_groups=query_groups,
        candidate_groups=candidate_groups, block=block_size, threads=num_threads, check_finite=check_finite,
        exclude_name="positives",
    )
    v.check_result_size(problem.queries.rows, options.count, "num_negatives")
    return problem


def _window_mine(problem: Problem, members, exclude_keys, options: MiningOptions, backend: str,
                 requested: str = "fp32"):
    """Steps 2-5 of the window strategies: positive scores -> filters -> the admissible rank
    window from the engine -> the strategy's pick -> statistics."""
    if members is None and options.positive_aware:
        raise ValueError(POSITIVES_NEEDED)
    num_queries = problem.queries.rows
    if members is not None:
        positive_scores, pair_scores = _positives.positive_scores(problem, *members)
    else:
        positive_scores, pair_scores = np.full(num_queries, np.nan, np.float32), None
    keys = filters.candidate_keys(exclude_keys, problem.candidates.rows)
    filtered = filters.apply(problem, options, positive_scores, members, keys)
    if options.strategy in WINDOW_SAMPLERS and (options.end or np.inf) >= problem.candidates.rows:
        drawn = filtered.problem
        # draws scored exactly (docs/precision.md, "Open sampling windows")
        drawn = replace(drawn, precision=_precision.resolve(requested, drawn, backend, k=options.first + options.count))
        indices, scores, tallies = _draw_open_window(drawn, options, backend)
        rescored = None
    else:
        scanned = replace(filtered.problem,
                          precision=_precision.resolve(requested, filtered.problem, backend, k=options.end))
        window_indices, window_scores, tallies, rescored = _scan.scan(backend, scanned, options.end)
        indices, scores = select(
            options.strategy, window_indices[:, options.first:], window_scores[:, options.first:], options.count,
            options.seed, options.temperature, options.query_offset, keys,
        )
    num_valid = (indices >= 0).sum(axis=1).astype(np.int64)
    stats = mining_stats(filtered.problem, members, pair_scores, filtered.keys, filtered.key_csr, filtered.tallied,
                         tallies, positive_scores, scores, num_valid, rescored)
    return indices, scores, positive_scores, stats


def _draw_open_window(problem: Problem, options: MiningOptions, backend: str):
    """``random``/``softmax`` over ranks ``first`` to the last admissible candidate, in one
    pass with O(first + count) state per query: the backend's sampler keeps the highest
    seeded priorities and, in the same tiles, the top ``first`` to drop; the same picks as a
    draw from the window held in memory."""
    rule = Rule(options.seed, options.temperature, options.query_offset)
    return _scan.sample(backend, problem, options.count, rule, skip=options.first)


def _cluster_draw(problem: Problem, members, clusters, options: MiningOptions):
    """The ``cluster`` strategy: reliable negatives drawn per query, then ordered by score."""
    num_queries = problem.queries.rows
    if members is None:
        raise ValueError("strategy='cluster' needs positives or query/candidate groups")
    rows = options.query_offset + np.arange(num_queries)
    if num_queries and clusters.query_labels.size < rows[-1] + 1:
        raise ValueError(f"clusters covers {clusters.query_labels.size} queries; these are rows "
                         f"{options.query_offset}..{options.query_offset + num_queries - 1} (query_offset + row)")
    if clusters.candidate_labels.size != problem.candidates.rows:
        raise ValueError(f"clusters covers {clusters.candidate_labels.size} candidates; got {problem.candidates.rows}")
    drawn = cluster.draw_reliable(clusters, members, rows, options.count, options.seed)
    valid = drawn >= 0
    scores = np.full(drawn.shape, -np.inf, dtype=np.float32)
    query_of = np.broadcast_to(np.arange(num_queries)[:, None], drawn.shape)[valid]
    scores[valid] = _positives.pair_scores(problem, query_of, drawn[valid]).astype(np.float32)
    order = np.lexsort((np.where(valid, drawn, np.iinfo(np.int64).max), -scores.astype(np.float64)), axis=1)
    indices = np.take_along_axis(drawn, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    positive_scores = _positives.positive_scores(problem, *members)[0]
    stats = cluster_stats(num_queries, problem.candidates.rows, int(members[1].size), positive_scores, scores,
                          valid.sum(axis=1))
    return indices, scores, positive_scores, stats
