"""Atomic, deterministic output files: the same arrays always give the same bytes."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

#: fixed zip timestamps, so that an npz's bytes depend on its arrays only
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Writes through a temp file in the same folder, fsyncs and renames it into place:
    readers see the old file or the complete new one, never a half-written one."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    def write(out: BinaryIO) -> None:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH), buffer.getvalue())

    atomic_write(path, write)


def write_json(path: str | os.PathLike, value: object) -> None:
    atomic_write(path, lambda out: out.write(json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"))


def write_negatives(path: str | os.PathLike, columns: dict[str, np.ndarray]) -> None:
    """The mining output as ``.parquet``, ``.npz`` or ``.jsonl`` (by suffix).

    Columns: ``query_id`` (int64), ``negative_ids`` (list of int64, -1 padding dropped),
    ``negative_scores`` (list of float32, aligned), ``positive_score`` (float32, NaN
    without positives), ``num_valid`` (int64). The npz keeps the padded (Q, n) arrays.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    ids, scores = columns["negative_ids"], columns["negative_scores"]
    valid = columns["num_valid"]
    if suffix == ".npz":
        write_npz(path, columns)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        offsets = np.concatenate([[0], np.cumsum(valid)]).astype(np.int64)
        keep = np.arange(ids.shape[1])[None, :] < valid[:, None]
        table = pa.table({
            "query_id": columns["query_id"],
            "negative_ids": pa.LargeListArray.from_arrays(offsets, ids[keep]),
            "negative_scores": pa.LargeListArray.from_arrays(offsets, scores[keep]),
            "positive_score": columns["positive_score"],
            "num_valid": valid,
        })
        atomic_write(path, lambda out: pq.write_table(table, out))
    elif suffix == ".jsonl":
        def write(out: BinaryIO) -> None:
            for q in range(ids.shape[0]):
                n = int(valid[q])
                positive = float(columns["positive_score"][q])
                row = {
                    "query_id": int(columns["query_id"][q]),
                    "negative_ids": ids[q, :n].tolist(),
                    "negative_scores": [float(s) for s in scores[q, :n]],
                    "positive_score": None if np.isnan(positive) else positive,
                    "num_valid": n,
                }
                out.write(json.dumps(row).encode() + b"\n")

        atomic_write(path, write)
    else:
        raise ValueError(f"--out must end in .parquet, .npz or .jsonl; got {path}")
