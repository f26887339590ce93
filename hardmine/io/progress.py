"""Progress of a long job: a tqdm bar on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time

import numpy as np


class Progress:
    """A tqdm bar on a terminal (rows/s, ETA, backend), a log line every few seconds otherwise,
    nothing when quiet."""

    def __init__(self, total: int, backend: str, quiet: bool):
        self.total, self.backend, self.quiet = total, backend, quiet
        self.start = time.monotonic()
        self.last = 0.0
        self.done_at_start: int | None = None
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rows", unit_scale=True, desc="hardmine mine", file=sys.stderr,
                            dynamic_ncols=True, postfix={"backend": backend})

    def update(self, done: int, final: bool = False, **status: object) -> None:
        """``status``: more to show, e.g. ``blocks="3/20", nodes=2`` from a distributed run."""
        if self.quiet:
            return
        if self.bar is not None:
            if status:
                self.bar.set_postfix(backend=self.backend, **status, refresh=False)
            if self.done_at_start is None:  # blocks saved by an earlier run: not part of the rate
                self.done_at_start = done
                self.bar.n = self.bar.last_print_n = done
                self.bar.refresh()
            else:
                self.bar.update(done - self.bar.n)
            if final:
                self.bar.close()
            return
        now = time.monotonic()
        if self.done_at_start is None:
            self.done_at_start = done
        if not final and now - self.last < 5.0:
            return
        self.last = now
        rate = (done - self.done_at_start) / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:,.0f}s" if np.isfinite(eta) else "?"
        sys.stderr.write(f"hardmine mine: {done:,}/{self.total:,} queries ({100 * done / max(self.total, 1):.1f}%), "
                         f"{rate:,.0f} rows/s, ETA {eta_text}, backend {self.backend}"
                         + "".join(f", {name} {value}" for name, value in status.items()) + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
