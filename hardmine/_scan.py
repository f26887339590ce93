"""Exact top-k over every query and candidate shard: one backend call per shard pair, the
candidate shards' windows merged as for the concatenated matrix."""

from __future__ import annotations

import numpy as np

from . import _merge as merge
from . import backends
from ._draws import Rule
from ._problem import CERTIFIED, Problem, RowShards, restrict_candidates, restrict_queries


def scan(backend: str, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The backend's fused top-k over every query and candidate shard, merged into one exact
    top-k: (indices, scores, per-filter tallies, re-scored), as for unsharded matrices;
    ``re-scored`` (int8 only, else None) counts the candidates re-scored exactly per query
    over all shards, -1 where a query fell back to fp32. Only min(k, candidates) columns are
    computed: past the candidate count there is only padding."""
    engine = backends.get(backend, device=problem.device, precision=problem.precision)
    width = max(1, min(k, problem.candidates.rows))
    results = [scan_candidates(engine, part, width) for part in query_shards(problem)]
    if len(results) == 1:
        return results[0]
    indices, scores, tallies, rescored = zip(*results)
    return (np.concatenate(indices), np.concatenate(scores), np.concatenate(tallies),
            None if rescored[0] is None else np.concatenate(rescored))


def sample(backend: str, problem: Problem, count: int, rule: Rule, skip: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` admissible candidates per query drawn from rank ``skip`` on, in one pass of the
    backend's sampler over every query and candidate shard (:meth:`Backend.sample` draws
    ``count + skip`` and finds the top ``skip`` in the same tiles; those are then dropped):
    (indices, scores, per-filter tallies), as for unsharded matrices."""
    engine = backends.get(backend, device=problem.device, precision=problem.precision)
    # no rank lies past the candidate count: the engine keeps at most that many per query
    num_candidates = max(1, problem.candidates.rows)
    kept, skip = min(count, num_candidates), min(skip, num_candidates)
    results, first_row = [], rule.first_row
    for part in query_shards(problem):
        found = _sample_candidates(engine, part, kept + skip, rule._replace(first_row=first_row), skip)
        indices, scores = merge.without_top(found[0], found[1], found[2], found[4], kept, part.candidate_keys)
        results.append((*padded(indices, scores, count), found[3]))
        first_row += part.queries.rows
    return tuple(np.concatenate(columns) for columns in zip(*results))


def _sample_candidates(engine, problem: Problem, count: int, rule: Rule, skip: int) -> tuple:
    if not isinstance(problem.candidates.array, RowShards):
        return engine.sample(problem, count, rule, skip)
    merged = None
    for offset, shard in problem.candidates.shards():
        found = engine.sample(restrict_candidates(problem, offset, shard), count,
                              rule._replace(first_id=rule.first_id + offset), skip)
        found = tuple(np.where(array >= 0, array + offset, -1) if position in (0, 4) else array
                      for position, array in enumerate(found))
        # a running merge keeps memory at two draws however many shards there are
        merged = found if merged is None else merge.samples([merged, found], count, problem.candidate_keys)
    return merged


def query_shards(problem: Problem) -> list[Problem]:
    """The problem split by query shard (each a problem of its own rows), or itself."""
    if not isinstance(problem.queries.array, RowShards):
        return [problem]
    return [restrict_queries(problem, start, start + shard.rows, shard) for start, shard in problem.queries.shards()]


def scan_candidates(engine, problem: Problem, k: int) -> tuple:
    """:func:`scan` over one query shard."""
    int8 = problem.precision in CERTIFIED
    run = (lambda part: engine.topk_certified(part, k)) if int8 else (lambda part: (*engine.topk(part, k), None))
    if not isinstance(problem.candidates.array, RowShards):
        return run(problem)
    indices, scores, tallies, rescored = None, None, 0, None
    for offset, shard in problem.candidates.shards():
        found, found_scores, counts, shortlist = run(restrict_candidates(problem, offset, shard))
        found = np.where(found >= 0, found + offset, -1)
        tallies = tallies + counts
        if int8:  # a query that fell back in any shard is reported as fallen back
            rescored = shortlist if rescored is None else np.where((rescored < 0) | (shortlist < 0), -1,
                                                                    rescored + shortlist)
        if indices is None:
            indices, scores = found, found_scores
        else:  # a running merge keeps memory at two windows however many shards there are
            indices, scores = merge.windows(np.concatenate([indices, found], axis=1),
                                            np.concatenate([scores, found_scores], axis=1), k,
                                            problem.candidate_keys)
    return indices, scores, tallies, rescored


def padded(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) results from narrower ones: -1 / -inf in the missing columns."""
    if indices.shape[1] >= k:
        return indices[:, :k], scores[:, :k]
    out_indices = np.full((indices.shape[0], k), -1, dtype=np.int64)
    out_scores = np.full((indices.shape[0], k), -np.inf, dtype=np.float32)
    out_indices[:, : indices.shape[1]] = indices
    out_scores[:, : indices.shape[1]] = scores
    return out_indices, out_scores


def unsharded(problem: Problem, function: str) -> Problem:
    if isinstance(problem.candidates.array, RowShards):
        raise TypeError(f"{function} takes candidates as one array; a list of shards is read by topk and mine "
                        f"(concatenate the shards for {function})")
    return problem
