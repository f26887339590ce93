"""The block plan's size: ``--memory-limit`` read, and the query rows per block that keep a
job's working memory under it."""

from __future__ import annotations

import re

from .. import _validation
from .state import JobError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}
#: fewest query rows per block; below this the per-block overhead dominates
MIN_BLOCK_ROWS = 256
#: most query rows per block (the engine parallelises inside a block)
MAX_BLOCK_ROWS = 65536


def parse_size(text: str) -> int:
    match = _SIZE.match(text or "")
    if not match or (match.group(2) or "").lower() not in _UNITS:
        raise JobError(f"--memory-limit: cannot read {text!r}; use e.g. 4GB, 512MiB or 800000000")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


#: resident memory of the interpreter with NumPy, Numba, pyarrow and hardmine loaded
#: (about 75 MiB measured on Linux x86-64), with headroom. A constant rather than a
#: reading, so that the same command always cuts the same blocks (--resume relies on it).
BASELINE_BYTES = 128 << 20


def block_rows_for(limit: int | None, dim: int, window: int, num_candidates: int, num_queries: int,
                   threads: int, width: int = 0, precision: str = "fp32") -> int:
    """Query rows per block so that working memory stays under ``limit``.

    Counted: the interpreter and libraries (BASELINE_BYTES), per-candidate arrays
    (norms, groups, keys: 20 bytes each), the engine's per-thread tiles (~16 MiB
    each), and per query row its float32 copy, the score window and the outputs
    (``width`` negatives, padded, held twice while a part is written). With certified scoring
    (``int8``, ``bf16``, or ``auto``, which may choose one) also the candidates' codes and bound
    factors (d + 56 bytes each; 2 d + 56 for bf16), each query row's codes (d + 40 bytes; 2 d + 40)
    and each thread's shortlists (240 queries of at most max(16 k + 256, C / 32) entries of 12
    bytes).
    Without a limit, blocks are cut at 16384 rows, fewer if that would not fit in the
    memory available now; a row that alone would not fit is refused, naming its size.
    """
    per_row = 4 * dim + 48 * window + 24 * width + 256
    int8 = precision != "fp32"
    code_bytes = 2 * dim if precision == "bf16" else dim
    if int8:
        per_row += code_bytes + 40
    if limit is None:
        available = _validation.available_memory()
        if per_row > available // 2:
            raise JobError(f"one query row needs about {per_row / 2**30:.1f} GiB ({width:,} negatives, a rank "
                           f"window of {window:,}); only {available / 2**30:.1f} GiB is available: ask for fewer "
                           f"negatives or a narrower --rank-range")
        return max(1, min(num_queries, 16384, available // 4 // per_row))
    fixed = BASELINE_BYTES + 20 * num_candidates + threads * (16 << 20) + (32 << 20)
    if int8:
        fixed += (code_bytes + 56) * num_candidates + threads * 240 * 12 * max(16 * window + 256, num_candidates // 32)
    budget = limit - fixed
    if budget < per_row * MIN_BLOCK_ROWS:
        raise JobError(
            f"--memory-limit {limit / 2**20:.0f} MiB is too small: about {fixed / 2**20:.0f} MiB is needed before "
            f"the first block and {per_row * MIN_BLOCK_ROWS / 2**20:.0f} MiB per {MIN_BLOCK_ROWS}-row block"
        )
    return int(max(MIN_BLOCK_ROWS, min(budget // per_row, MAX_BLOCK_ROWS, max(num_queries, 1))))
