"""Embedding dumps on disk: ``.npy`` files and directories of ``.npy`` shards,
memory-mapped, validated before any heavy work."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class DumpError(ValueError):
    """A dump that cannot be used; the message names the file."""


def _open_npy(path: Path) -> np.memmap:
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        raise DumpError(f"{path}: not a readable .npy file ({error})") from None
    if not isinstance(array, np.ndarray):
        raise DumpError(f"{path}: expected a .npy array")
    if array.ndim != 2:
        raise DumpError(f"{path}: embeddings must be 2-D (n, d); got shape {array.shape}")
    if array.dtype not in _DTYPES:
        raise DumpError(f"{path}: embeddings must be float32 or float16; got {array.dtype}")
    return array


class Dump:
    """Rows of one ``.npy`` file or of a directory of shards (sorted by name),
    with the shard boundaries invisible to the reader."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.suffix == ".npy")
            if not files:
                raise DumpError(f"{self.path}: directory holds no .npy shards")
        elif self.path.is_file():
            files = [self.path]
        else:
            raise DumpError(f"{self.path}: no such file or directory")
        self.files = files
        self.shards = [_open_npy(f) for f in files]
        first = self.shards[0]
        for file, shard in zip(files, self.shards):
            if shard.shape[1] != first.shape[1] or shard.dtype != first.dtype:
                raise DumpError(
                    f"{file}: shard has shape {shard.shape} and dtype {shard.dtype}, but {files[0]} has "
                    f"{first.shape[1]} columns and dtype {first.dtype}"
                )
        self.offsets = np.concatenate([[0], np.cumsum([s.shape[0] for s in self.shards])])
        self.shape = (int(self.offsets[-1]), int(first.shape[1]))
        self.dtype = first.dtype

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop): a view when inside one shard, else a copy of just those rows."""
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        last = int(np.searchsorted(self.offsets, stop, side="left"))
        if last - first <= 1:
            base = self.offsets[first]
            return self.shards[first][start - base : stop - base]
        parts = []
        for s in range(first, last):
            lo = max(start, self.offsets[s]) - self.offsets[s]
            hi = min(stop, self.offsets[s + 1]) - self.offsets[s]
            parts.append(np.asarray(self.shards[s][lo:hi]))
        return np.concatenate(parts)

    def whole(self) -> np.ndarray:
        """The dump as one array: the memory map itself for a single file."""
        if len(self.shards) == 1:
            return self.shards[0]
        raise DumpError(
            f"{self.path}: candidates split into {len(self.shards)} shards; this version needs them in one "
            f".npy file (queries may be sharded)"
        )

    def check_finite(self, chunk_rows: int = 1 << 16) -> None:
        """Streams over the rows once; names the file and row of the first NaN/inf."""
        for file, shard in zip(self.files, self.shards):
            for start in range(0, shard.shape[0], chunk_rows):
                block = np.asarray(shard[start : start + chunk_rows])
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():
                    row = start + int(np.argmin(finite))
                    raise DumpError(f"{file}: row {row} contains NaN or inf")

    def fingerprint(self) -> list[dict]:
        return [fingerprint(f) for f in self.files]


def fingerprint(path: Path, samples: int = 16, sample_bytes: int = 1 << 16) -> dict:
    """Size plus a SHA-256 of evenly spaced byte samples: cheap on huge files,
    and changes when the file is replaced or rewritten."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for i in range(samples):
            source.seek(max(0, (size - sample_bytes) * i // max(samples - 1, 1)))
            digest.update(source.read(sample_bytes))
    return {"file": os.path.abspath(path), "size": size, "sha256_sampled": digest.hexdigest()}


def load_ids(path: str | os.PathLike, name: str) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Positives or group labels: ``.npy`` int array, or ``.npz`` with ``indptr`` and ``indices`` (CSR)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                if not {"indptr", "indices"} <= set(archive.files):
                    raise DumpError(f"{path}: a CSR .npz needs arrays 'indptr' and 'indices'; has {archive.files}")
                return archive["indptr"], archive["indices"]
        array = np.load(path)
    except DumpError:
        raise
    except (ValueError, OSError, EOFError) as error:
        raise DumpError(f"{path}: cannot read {name} ({error})") from None
    if array.dtype.kind not in "iu":
        raise DumpError(f"{path}: {name} must hold integers; got {array.dtype}")
    return array
