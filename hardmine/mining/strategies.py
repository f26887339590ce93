"""The mining strategies, one registry (SPEC 5.2). A window strategy picks ``count`` of the
rank window the engine returned for each query; ``cluster`` draws among the reliable
negatives of a :func:`hardmine.cluster.reliability` instead of ranking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._draws import priorities
from .._merge import drawn_columns


def _first(indices: np.ndarray, scores: np.ndarray, count: int, seed: int, temperature: float | None,
           first_row: int, keys: np.ndarray | None) -> np.ndarray:
    """The window's best ``count`` columns (``top``; ``semihard`` after its band filter)."""
    width = min(count, indices.shape[1])
    return np.broadcast_to(np.arange(width), (indices.shape[0], width))


def _drawn(indices: np.ndarray, scores: np.ndarray, count: int, seed: int, temperature: float | None,
           first_row: int, keys: np.ndarray | None) -> np.ndarray:
    """``count`` columns drawn without replacement: uniformly (``random``), or with P
    proportional to exp(s / temperature) by Gumbel-top-k (``softmax``), in window order: the
    highest :func:`hardmine._draws.priorities`, as the engine's one-pass sampler keeps them."""
    if indices.shape[1] <= count:
        return _first(indices, scores, count, seed, temperature, first_row, keys)
    rows = first_row + np.arange(indices.shape[0], dtype=np.int64)[:, None]
    valid = indices >= 0
    ids = np.where(valid, indices if keys is None else keys[np.maximum(indices, 0)], 0)
    return drawn_columns(np.where(valid, priorities(seed, rows, ids, scores, temperature), -np.inf), count)


@dataclass(frozen=True)
class Strategy:
    """``pick`` chooses window columns (None: not a window strategy); ``band`` says the
    semi-hard band is a filter before ranking."""

    name: str
    pick: Callable[..., np.ndarray] | None
    band: bool = False


STRATEGIES = {strategy.name: strategy for strategy in (
    Strategy("top", _first),
    Strategy("random", _drawn),
    Strategy("semihard", _first, band=True),
    Strategy("softmax", _drawn),
    Strategy("cluster", None),
)}

#: strategies that draw from their window; an open one (``rank_range=(a, None)``) is drawn
#: in one pass by the backend's sampler, a bounded one from the window in memory
WINDOW_SAMPLERS = ("random", "softmax")


def select(
    strategy: str, indices: np.ndarray, scores: np.ndarray, count: int, seed: int, temperature: float | None,
    first_row: int = 0, keys: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Picks ``count`` entries per row of a rank window.

    ``indices``/``scores`` are (Q, w), best first, -1/-inf padded at the end, for
    query rows ``first_row, first_row + 1, ...``; under ``exclude_keys`` a draw is seeded by
    the candidate's key (``keys``) rather than its id. The picks keep that order (score
    descending) and are padded the same way.
    """
    columns = STRATEGIES[strategy].pick(indices, scores, count, seed, temperature, first_row, keys)
    num_queries = indices.shape[0]
    picked_indices = np.full((num_queries, count), -1, dtype=np.int64)
    picked_scores = np.full((num_queries, count), -np.inf, dtype=np.float32)
    picked_indices[:, : columns.shape[1]] = np.take_along_axis(indices, columns, axis=1)
    picked_scores[:, : columns.shape[1]] = np.take_along_axis(scores, columns, axis=1)
    return picked_indices, picked_scores
