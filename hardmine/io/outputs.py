"""Atomic, deterministic output files: the same arrays always give the same bytes."""

from __future__ import annotations

import io
import json
import os
import socket
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

#: fixed zip timestamps, so that an npz's bytes depend on its arrays only
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: str | os.PathLike, name: str) -> None:
    """Deletes the temp files :func:`atomic_write` leaves for ``folder/name*`` when its
    process is killed mid-write (the caller makes sure no live writer uses them)."""
    for temp in Path(folder).glob(f".{name}*.tmp"):
        temp.unlink(missing_ok=True)


def may_be_live(temp: Path) -> bool:
    """Whether the temp file of :func:`atomic_write` may belong to a writer still running: its
    name holds the writer's host and pid; on this host a pid that no longer runs proves it dead,
    on another host nothing does."""
    try:
        host, _, pid = temp.name.split(".")[-3].rpartition("-")
        pid_number = int(pid)
    except (IndexError, ValueError):  # not a name atomic_write makes
        return False
    return host != socket.gethostname().replace(".", "_") or pid_alive(pid_number)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Writes through a temp file in the same folder, fsyncs and renames it into place:
    readers see the old file or the complete new one, never a half-written one. The file
    gets the permissions of a plain ``open()`` under the process umask."""
    path = Path(path)
    # the writer's host and pid in the name: a merge can tell a live writer's temp file (may_be_live)
    writer = f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.{writer}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600 files
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def npz_writer(arrays: dict[str, np.ndarray]) -> Callable[[BinaryIO], None]:
    """Writes ``arrays`` as an uncompressed ``.npz`` whose bytes depend on the arrays only."""

    def write(out: BinaryIO) -> None:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH), buffer.getvalue())

    return write


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, npz_writer(arrays))


#: the output columns, in order
COLUMNS = ("query_id", "negative_ids", "negative_scores", "positive_score", "num_valid")


def negatives_writer(name: str, blocks: Callable[[], Iterator[dict[str, np.ndarray]]],
                     width: int) -> Callable[[BinaryIO], None]:
    """Streams the mining output into ``.parquet``, ``.npz`` or ``.jsonl`` (by the suffix of
    ``name``), one block of queries at a time, so memory stays at one block whatever the total.

    ``blocks()`` yields dicts with the COLUMNS as padded arrays: ``negative_ids``
    (rows, n) int64 and ``negative_scores`` (rows, n) float32 with -1/-inf padding,
    the others (rows,). In parquet and jsonl the lists hold only the ``num_valid``
    real negatives; the npz keeps the padded (Q, n) arrays. NaN ``positive_score``
    (no positives) is null in jsonl. ``width``: the negatives per query (the npz's second
    dimension when there are no queries).
    """
    suffix = Path(name).suffix.lower()
    streams = {".npz": _stream_npz, ".parquet": _stream_parquet, ".jsonl": _stream_jsonl}
    if suffix not in streams:
        raise ValueError(f"--out must end in .parquet, .npz or .jsonl; got {name}")
    return lambda out: streams[suffix](out, blocks, width)


def _stream_npz(out: BinaryIO, blocks: Callable[[], Iterator[dict[str, np.ndarray]]], width: int) -> None:
    # no queries: empty arrays of the columns' dtypes (ids: row numbers)
    shapes: dict[str, tuple] = {"query_id": (0,), "negative_ids": (0, width), "negative_scores": (0, width),
                                "positive_score": (0,), "num_valid": (0,)}
    dtypes: dict[str, np.dtype] = {"query_id": np.dtype(np.int64), "negative_ids": np.dtype(np.int64),
                                   "negative_scores": np.dtype(np.float32), "positive_score": np.dtype(np.float32),
                                   "num_valid": np.dtype(np.int64)}
    for block in blocks():  # first pass: shapes only (reads the small headers of the parts)
        for name in COLUMNS:
            array = block[name]
            rows = shapes[name][0] + array.shape[0]
            shapes[name], dtypes[name] = (rows, *array.shape[1:]), array.dtype
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in COLUMNS:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            with archive.open(info, "w", force_zip64=True) as member:
                header = {"descr": np.lib.format.dtype_to_descr(dtypes[name]), "fortran_order": False,
                          "shape": shapes[name]}
                np.lib.format.write_array_header_2_0(member, header)
                for block in blocks():
                    member.write(np.ascontiguousarray(block[name]).tobytes())


def _parquet_schema(block: dict[str, np.ndarray] | None):
    """Ids are row numbers, or the user's integer or string ids."""
    import pyarrow as pa

    def id_type(name: str):
        return pa.string() if block is not None and block[name].dtype.kind == "U" else pa.int64()

    return pa.schema([("query_id", id_type("query_id")), ("negative_ids", pa.large_list(id_type("negative_ids"))),
                      ("negative_scores", pa.large_list(pa.float32())), ("positive_score", pa.float32()),
                      ("num_valid", pa.int64())])


def _stream_parquet(out: BinaryIO, blocks: Callable[[], Iterator[dict[str, np.ndarray]]], width: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for block in blocks():
            if writer is None:
                writer = pq.ParquetWriter(out, _parquet_schema(block))
            valid = block["num_valid"]
            offsets = np.concatenate([[0], np.cumsum(valid)]).astype(np.int64)
            keep = np.arange(block["negative_ids"].shape[1])[None, :] < valid[:, None]
            writer.write_table(pa.table({
                "query_id": block["query_id"],
                "negative_ids": pa.LargeListArray.from_arrays(offsets, block["negative_ids"][keep]),
                "negative_scores": pa.LargeListArray.from_arrays(offsets, block["negative_scores"][keep]),
                "positive_score": block["positive_score"],
                "num_valid": valid,
            }, schema=writer.schema))
        if writer is None:  # no queries: a valid file with the columns and no rows
            writer = pq.ParquetWriter(out, _parquet_schema(None))
    finally:
        if writer is not None:
            writer.close()


def _stream_jsonl(out: BinaryIO, blocks: Callable[[], Iterator[dict[str, np.ndarray]]], width: int) -> None:
    for block in blocks():
        for q in range(block["query_id"].shape[0]):
            n = int(block["num_valid"][q])
            positive = float(block["positive_score"][q])
            row = {
                "query_id": block["query_id"][q].item(),
                "negative_ids": block["negative_ids"][q, :n].tolist(),
                "negative_scores": [float(s) for s in block["negative_scores"][q, :n]],
                "positive_score": None if np.isnan(positive) else positive,
                "num_valid": n,
            }
            out.write(json.dumps(row).encode() + b"\n")
