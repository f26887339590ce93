"""Embedding rows on the device for the GPU backends' tile loop: device matrices read in place,
host candidates uploaded once when they fit, streamed through pinned double buffers when not.

``xp`` is the array module: CuPy on a GPU, NumPy under the CUDA simulator (where the host/device
distinction is simulated and the streamed path copies synchronously).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .._problem import DeviceMatrix, Embeddings
from .._validation import available_memory

#: host candidates are kept on the device whole when their float32 copy takes at most this
#: fraction of the free device memory; larger dumps stream a tile at a time
RESIDENT_FRACTION = 0.5


def free_memory(xp) -> int:
    """Free bytes of the current device (of host memory under the simulator)."""
    return available_memory() if xp is np else int(xp.cuda.Device().mem_info[0])


def query_rows(emb: Embeddings, start: int, stop: int, xp):
    """Rows [start, stop) as a float32 device array the caller may modify (a copy)."""
    if isinstance(emb.array, DeviceMatrix):
        return emb.array.data[start:stop].astype(np.float32, copy=True)
    return xp.asarray(emb.rows_f32(start, stop))


class CandidateRows:
    """The candidate matrix as float32 device tiles of ``tile_rows`` rows, for every query block."""

    def __init__(self, emb: Embeddings, tile_rows: int, xp):
        self.emb, self.tile_rows, self.xp = emb, tile_rows, xp
        self.resident = None
        if isinstance(emb.array, DeviceMatrix):
            self.resident = emb.array.data
        elif 4 * emb.rows * emb.dim <= RESIDENT_FRACTION * free_memory(xp):
            self.resident = xp.empty((emb.rows, emb.dim), dtype=np.float32)
            for c0 in range(0, emb.rows, tile_rows):
                c1 = min(c0 + tile_rows, emb.rows)
                self.resident[c0:c1] = xp.asarray(emb.rows_f32(c0, c1, copy=False))
        self.staging = None if self.resident is not None or xp is np else _Staging(emb, tile_rows, xp)

    def tiles(self) -> Iterator[tuple[int, object]]:
        """(c0, rows [c0, c0 + tile_rows) on the device), in order."""
        ranges = [(c0, min(c0 + self.tile_rows, self.emb.rows)) for c0 in range(0, self.emb.rows, self.tile_rows)]
        if self.staging is not None:
            yield from self.staging.tiles(ranges)
            return
        for c0, c1 in ranges:
            if self.resident is not None:
                yield c0, self.resident[c0:c1].astype(np.float32, copy=False)
            else:  # the simulator's stand-in for the streamed path
                yield c0, self.xp.asarray(self.emb.rows_f32(c0, c1, copy=False))


class _Staging:
    """Two pinned host buffers and two device buffers used in turn: while the kernels of tile i
    read device buffer i % 2, the rows of tile i+1 are gathered into the other pinned buffer
    and copied on a separate stream. Events order each reuse after the work that read it."""

    def __init__(self, emb: Embeddings, tile_rows: int, xp):
        self.emb, self.xp = emb, xp
        size = tile_rows * emb.dim
        self.pinned = [np.frombuffer(xp.cuda.alloc_pinned_memory(4 * size), np.float32, size) for _ in range(2)]
        self.device = [xp.empty(size, dtype=np.float32) for _ in range(2)]
        self.copied: list = [None, None]  # the copy into device[slot] has finished
        self.read: list = [None, None]  # the kernels reading device[slot] have finished
        self.copy_stream = xp.cuda.Stream(non_blocking=True)

    def _start(self, slot: int, c0: int, c1: int) -> None:
        if self.read[slot] is not None:
            self.read[slot].synchronize()  # the previous copy from pinned[slot] ended before that, too
        count = (c1 - c0) * self.emb.dim
        self.pinned[slot][:count].reshape(c1 - c0, self.emb.dim)[...] = self.emb.array[c0:c1]
        self.device[slot][:count].set(self.pinned[slot][:count], stream=self.copy_stream)
        self.copied[slot] = self.copy_stream.record()

    def tiles(self, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, object]]:
        compute = self.xp.cuda.get_current_stream()
        if ranges:
            self._start(0, *ranges[0])
        for i, (c0, c1) in enumerate(ranges):
            slot = i % 2
            compute.wait_event(self.copied[slot])
            yield c0, self.device[slot][: (c1 - c0) * self.emb.dim].reshape(c1 - c0, self.emb.dim)
            self.read[slot] = compute.record()
            if i + 1 < len(ranges):
                self._start(1 - slot, *ranges[i + 1])
