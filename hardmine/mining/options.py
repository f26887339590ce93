"""Mining options checked on their own, before any data is read: one validator for the API,
the CLI and the drop-ins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _validation as v
from .strategies import STRATEGIES, WINDOW_SAMPLERS

#: the smallest softmax temperature: scores reach 2**100 (SCORE_LIMIT), and the certified paths
#: keep priorities s / T in float32, so T >= 2**-20 keeps every priority finite on every path
MIN_TEMPERATURE = 2.0**-20

#: query_offset + the rows of a call must fit the int64 row numbers of every backend's draws
MAX_QUERY_OFFSET = 2**62


@dataclass(frozen=True)
class MiningOptions:
    """Validated :func:`hardmine.mine` options; ``first``/``end`` are the scanned rank window
    (``end`` None: to the last admissible candidate, for the sampling strategies)."""

    count: int
    strategy: str
    first: int
    end: int | None
    margin: float | None
    relative_margin: float | None
    max_score: float | None
    min_score: float | None
    temperature: float | None
    seed: int
    query_offset: int

    @property
    def positive_aware(self) -> bool:
        """Whether the filters need each query's positive score."""
        return self.strategy == "semihard" or self.margin is not None or self.relative_margin is not None


def _optional_real(value: Any, name: str) -> float | None:
    return None if value is None else v.real(value, name)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    return int(value)


def rank_window(rank_range: Any, count: int, strategy: str) -> tuple[int, int | None]:
    """The ranks ``[first, end)`` the engine must consider for ``rank_range`` and ``count``
    picks; ``end`` None for a sampling strategy over every rank from ``first`` on."""
    if not isinstance(rank_range, (tuple, list)) or len(rank_range) != 2:
        raise TypeError(f"rank_range must be a pair (a, b) with b None or > a; got {rank_range!r}")
    first = 0 if rank_range[0] is None else rank_range[0]
    if isinstance(first, bool) or not isinstance(first, (int, np.integer)):
        raise TypeError(f"rank_range[0] must be an integer; got {type(first).__name__}")
    if first < 0:
        raise ValueError(f"rank_range[0] must be >= 0; got {first}")
    first = int(first)
    if rank_range[1] is None:
        return first, None if strategy in WINDOW_SAMPLERS else first + count
    end = v.positive_int(rank_range[1], "rank_range[1]")
    if end <= first:
        raise ValueError(f"rank_range must have a < b; got {tuple(rank_range)!r}")
    if strategy not in WINDOW_SAMPLERS:
        end = min(end, first + count)  # nothing past the first `count` window ranks can be picked
    return first, end


def mining_options(
    *, num_negatives: Any = 5, strategy: Any = "top", rank_range: Any = (0, None), margin: Any = None,
    relative_margin: Any = None, max_score: Any = None, min_score: Any = None, temperature: Any = None,
    seed: Any = 0, query_offset: Any = 0, exclude_keys_given: bool = False, clusters_given: bool = False,
) -> MiningOptions:
    """Checks every mining option and how they combine, naming the one at fault."""
    count = v.positive_int(num_negatives, "num_negatives")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {tuple(STRATEGIES)}; got {strategy!r}")
    first, end = rank_window(rank_range, count, strategy)
    margin = _optional_real(margin, "margin")
    relative_margin = _optional_real(relative_margin, "relative_margin")
    max_score = _optional_real(max_score, "max_score")
    min_score = _optional_real(min_score, "min_score")
    temperature = _optional_real(temperature, "temperature")
    if strategy == "softmax" and (temperature is None or temperature <= 0):
        raise ValueError(f"strategy='softmax' needs temperature > 0; got {temperature!r}")
    if strategy == "softmax" and temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:.3g} (2**-20: scores reach 2**100, and "
                         f"the priorities s / temperature must stay finite in float32 on every path); got "
                         f"{temperature!r}; for the top of the window use strategy='top'")
    if strategy != "softmax" and temperature is not None:
        raise ValueError(f"temperature only applies to strategy='softmax'; got strategy={strategy!r}")
    if strategy == "semihard" and (margin is None or margin <= 0):
        raise ValueError(f"strategy='semihard' needs margin > 0 (the band s_p - margin < s < s_p); got {margin!r}")
    seed = _integer(seed, "seed")
    query_offset = _integer(query_offset, "query_offset")
    if not 0 <= query_offset < MAX_QUERY_OFFSET:
        raise ValueError(f"query_offset must be in [0, 2**62) (global query rows are int64); got {query_offset}")
    if (strategy == "cluster") != clusters_given:
        raise ValueError("strategy='cluster' and clusters= (a hardmine.cluster.reliability) come together")
    if strategy == "cluster":
        given = [name for name, value in (("margin", margin), ("relative_margin", relative_margin),
                                          ("max_score", max_score), ("min_score", min_score),
                                          ("exclude_keys", True if exclude_keys_given else None))
                 if value is not None]
        if given or tuple(rank_range) != (0, None):
            raise ValueError(f"strategy='cluster' draws among the reliable negatives; "
                             f"{', '.join(given) or 'rank_range'} does not apply to it")
    return MiningOptions(count, strategy, first, end, margin, relative_margin, max_score, min_score, temperature,
                         seed, query_offset)
