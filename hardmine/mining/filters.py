"""The admissible-negative filters of SPEC 5.2 as the engine reads them: per-query score
bounds, keys a query may not get, and the bounds whose crossings are tallied for the
statistics. Everything here runs inside the backend's scan, never on a score matrix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import _positives
from .. import _validation as v
from .._problem import Problem
from .options import MiningOptions


@dataclass(frozen=True)
class Filters:
    """The filtered problem and what the statistics need to read its tallies back."""

    problem: Problem
    keys: np.ndarray | None
    key_csr: tuple[np.ndarray | None, np.ndarray | None]
    tallied: list[tuple[str, np.ndarray, bool]]  # (filter name, (Q,) float32 bound, count below?)


def _bounds(options: MiningOptions, s_p: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(upper, lower) float32 score bounds per query, None where a side is unbounded."""
    num_queries = s_p.shape[0]
    upper = np.full(num_queries, np.inf)
    lower = np.full(num_queries, -np.inf)
    if options.max_score is not None:
        upper = np.minimum(upper, options.max_score)
    if options.min_score is not None:
        lower = np.maximum(lower, options.min_score)
    if options.strategy == "semihard":
        upper = np.minimum(upper, s_p)
        lower = np.maximum(lower, s_p - options.margin)
    elif options.margin is not None:
        upper = np.minimum(upper, s_p - options.margin)
    if options.relative_margin is not None:
        upper = np.minimum(upper, s_p - np.abs(s_p) * options.relative_margin)
    bounded_above = options.max_score is not None or options.positive_aware
    bounded_below = options.min_score is not None or options.strategy == "semihard"
    return (upper.astype(np.float32) if bounded_above else None,
            lower.astype(np.float32) if bounded_below else None)


def _tallied(options: MiningOptions, s_p: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """(name, (Q,) float32 bound, count below?) for every active filter."""
    num_queries = s_p.shape[0]
    out = []
    if options.max_score is not None:
        out.append(("max_score", np.full(num_queries, options.max_score), False))
    if options.min_score is not None:
        out.append(("min_score", np.full(num_queries, options.min_score), True))
    if options.strategy == "semihard":
        # outside the band: s >= s_p, or s <= s_p - margin
        out.append(("semi-hard band (above)", np.nextafter(s_p.astype(np.float32), -np.inf), False))
        out.append(("semi-hard band (below)", np.nextafter((s_p - options.margin).astype(np.float32), np.inf), True))
    elif options.margin is not None:
        out.append(("margin", s_p - options.margin, False))
    if options.relative_margin is not None:
        out.append(("relative_margin", s_p - np.abs(s_p) * options.relative_margin, False))
    return [(name, np.ascontiguousarray(bound, dtype=np.float32), below) for name, bound, below in out]


def candidate_keys(exclude_keys, num_candidates: int) -> np.ndarray | None:
    """``exclude_keys`` as a (C,) int64 array, checked."""
    if exclude_keys is None:
        return None
    keys = np.ascontiguousarray(v.int_array(exclude_keys, "exclude_keys"), dtype=np.int64)
    if keys.shape != (num_candidates,):
        raise ValueError(f"exclude_keys must have shape ({num_candidates},), one key per candidate; got {keys.shape}")
    return keys


def apply(problem: Problem, options: MiningOptions, positive_scores: np.ndarray,
          members: tuple[np.ndarray, np.ndarray] | None, keys: np.ndarray | None) -> Filters:
    """The problem with every filter of ``options`` set for the engine to apply while scanning."""
    s_p = positive_scores.astype(np.float64)
    upper, lower = _bounds(options, s_p)
    key_csr = (_positives.key_exclusions(keys, members, problem.queries.rows) if keys is not None
               else (None, None))
    tallied = _tallied(options, s_p)
    filtered = dataclasses.replace(
        problem,
        candidate_keys=keys,
        excluded_key_indptr=key_csr[0],
        excluded_key_indices=key_csr[1],
        upper_bounds=upper,
        lower_bounds=lower,
        exclusive_bounds=options.strategy == "semihard",
        count_bounds=tuple(bound for _, bound, _ in tallied),
        count_below=tuple(below for _, _, below in tallied),
    )
    return Filters(filtered, keys, key_csr, tallied)
