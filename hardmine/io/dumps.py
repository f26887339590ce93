"""Embedding dumps on disk, validated before any heavy work.

``.npy`` files and directories of ``.npy`` shards are memory-mapped in place.
Parquet and Arrow IPC files (or directories of them) with an embedding column
are converted once, in row batches, into a ``.npy`` file in the job's folder and
memory-mapped from there: the engine needs random access to candidate rows,
which a columnar file does not give, and the conversion is bounded in memory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import _rows
from .._problem import RowShards
from .outputs import atomic_write

_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
_COLUMNAR = (".parquet", ".arrow", ".feather", ".ipc")
#: rows per batch when converting a columnar file
_BATCH_ROWS = 65536


class DumpError(ValueError):
    """A dump that cannot be used; the message names the file."""


def read_npy(path: str | os.PathLike, label: str | None = None, mmap_mode: str | None = "r") -> np.ndarray:
    """np.load of one ``.npy`` (memory-mapped by default) or ``.npz``, with every failure of a
    damaged or foreign file (bad header, truncated data or zip, pickles) as a DumpError that
    starts with ``label`` (default: the path)."""
    label = label or str(path)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except MemoryError:
        raise DumpError(f"{label}: the header announces more data than fits in memory (a damaged .npy?)") from None
    except Exception as error:  # NumPy raises a dozen types for damaged headers (ValueError, SyntaxError, ...)
        raise DumpError(f"{label}: not a readable .npy file ({type(error).__name__}: {error})") from None


def _open_npy(path: Path) -> np.memmap:
    array = read_npy(path)
    if not isinstance(array, np.ndarray):
        raise DumpError(f"{path}: expected a .npy array")
    if array.ndim != 2:
        raise DumpError(f"{path}: embeddings must be 2-D (n, d); got shape {array.shape}")
    if array.dtype not in _DTYPES:
        raise DumpError(f"{path}: embeddings must be float32 or float16; got {array.dtype}")
    return array


def input_files(path: Path) -> list[Path]:
    """The file itself, or a directory's .npy or columnar files sorted by name (one kind only)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DumpError(f"{path}: no such file or directory")
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npy", *_COLUMNAR) and p.is_file())
    if not found:
        raise DumpError(f"{path}: directory holds no .npy, .parquet or .arrow shards")
    kinds = {p.suffix.lower() == ".npy" for p in found}
    if len(kinds) > 1:
        raise DumpError(f"{path}: directory mixes .npy and Parquet/Arrow shards; keep one kind per directory")
    return found


def is_columnar(path: str | os.PathLike) -> bool:
    return input_files(Path(path))[0].suffix.lower() in _COLUMNAR


class Dump:
    """Rows of one ``.npy`` file or of a directory of ``.npy`` shards (sorted by name),
    with the shard boundaries invisible to the reader (``array`` is a RowShards)."""

    def __init__(self, path: str | os.PathLike, label: str | os.PathLike | None = None,
                 source: list[Path] | None = None):
        self.path = Path(path)
        self.files = input_files(self.path)
        self.label = Path(label) if label is not None else None  # the user's Parquet/Arrow input, if converted
        self.source = source or self.files  # the files the user named (fingerprinted)
        self.shards = [_open_npy(f) for f in self.files]
        first = self.shards[0]
        for file, shard in zip(self.files, self.shards):
            if shard.shape[1] != first.shape[1] or shard.dtype != first.dtype:
                raise DumpError(
                    f"{file}: shard has shape {shard.shape} and dtype {shard.dtype}, but {self.files[0]} has "
                    f"{first.shape[1]} columns and dtype {first.dtype}"
                )
        self.array = RowShards(self.shards)
        self.shape = self.array.shape
        self.dtype = first.dtype

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop): a view when inside one shard, else a copy of just those rows."""
        return self.array[start:stop]

    def check_finite(self, memory_limit: int | None = None) -> float:
        """Streams over the rows once, in chunks of a few MiB (a small share of ``memory_limit``);
        names the file and row of the first NaN/inf. Returns the largest magnitude seen."""
        chunk_bytes = _rows.SCAN_BYTES if memory_limit is None else max(1 << 16, min(
            _rows.SCAN_BYTES, memory_limit // 64))
        peak = 0.0
        for number, shard in enumerate(self.shards):
            rows, largest = _rows.first_nonfinite_row(shard, chunk_bytes)
            if rows is not None:
                if self.label is not None:  # converted: one shard, rows as in the user's file
                    raise DumpError(f"{self.label}: row {rows} contains NaN or inf")
                raise DumpError(f"{self.files[number]}: row {rows} contains NaN or inf")
            peak = max(peak, largest)
        return peak

    def fingerprint(self) -> list[dict]:
        return [fingerprint(f) for f in self.source]


def fingerprint(path: Path, chunk_bytes: int = 4 << 20) -> dict:
    """Size and a SHA-256 of every byte, streamed in chunks: any rewrite of the file,
    however small, changes it (a resume must not mix blocks mined from other data).
    One read of the inputs, cheap next to mining them."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(chunk_bytes):
            digest.update(chunk)
            size += len(chunk)
    return {"file": os.path.abspath(path), "size": size, "sha256": digest.hexdigest()}


def _dataset(files: list[Path]):
    import pyarrow.dataset as ds

    suffix = files[0].suffix.lower()
    try:
        return ds.dataset([str(f) for f in files], format="parquet" if suffix == ".parquet" else "ipc")
    except Exception as error:  # pyarrow raises several types for unreadable files
        raise DumpError(f"{files[0].parent if len(files) > 1 else files[0]}: not a readable "
                        f"{'Parquet' if suffix == '.parquet' else 'Arrow IPC'} file ({error})") from None


def columnar_schema(path: str | os.PathLike, column: str | None, id_column: str | None) -> tuple[int, int, np.dtype]:
    """(rows, d, dtype) of a Parquet/Arrow embedding column, checked from the schema alone."""
    import pyarrow as pa

    path = Path(path)
    if column is None:
        raise DumpError(f"{path}: Parquet/Arrow input needs --column NAME (the embedding column)")
    dataset = _dataset(input_files(path))
    schema = dataset.schema
    for name, what in ((column, "--column"), (id_column, "--id-column")):
        if name is not None and name not in schema.names:
            raise DumpError(f"{path}: {what} {name!r} is not a column; columns are {schema.names}")
    kind = schema.field(column).type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise DumpError(f"{path}: column {column!r} must be a (fixed-size) list of floats; got {kind}")
    value = kind.value_type
    if not (pa.types.is_float16(value) or pa.types.is_float32(value) or pa.types.is_float64(value)):
        raise DumpError(f"{path}: column {column!r} must hold float16/32/64 values; got {value}")
    if id_column is not None:
        ids = schema.field(id_column).type
        if not (pa.types.is_integer(ids) or pa.types.is_string(ids) or pa.types.is_large_string(ids)):
            raise DumpError(f"{path}: --id-column {id_column!r} must hold integers or strings; got {ids}")
    dim = kind.list_size if pa.types.is_fixed_size_list(kind) else None
    if dim is None:  # a variable-size list: the first row tells, every row is checked while converting
        first = dataset.head(1, columns=[column]).column(0)
        if len(first) == 0 or first[0].values is None:
            raise DumpError(f"{path}: column {column!r} has no rows to tell the dimension from")
        dim = len(first[0].values)
    dtype = np.dtype(np.float16) if pa.types.is_float16(value) else np.dtype(np.float32)
    return dataset.count_rows(), int(dim), dtype


def convert_columnar(path: str | os.PathLike, column: str, id_column: str | None, out: Path,
                     ids_out: Path | None) -> None:
    """Writes the embedding column as an (n, d) ``.npy`` (float16 stays float16, float64 becomes
    float32) and the id column as a (n,) ``.npy``, in row batches, each file atomically."""
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path)
    rows, dim, dtype = columnar_schema(path, column, id_column)
    dataset = _dataset(input_files(path))
    columns = [column] + ([id_column] if id_column else [])

    def batches():
        seen = 0
        for batch in dataset.to_batches(columns=columns, batch_size=_BATCH_ROWS):
            values = batch.column(0)
            if values.null_count:
                row = seen + int(np.argmax(np.asarray(values.is_null())))
                raise DumpError(f"{path}: column {column!r} is null at row {row}")
            lengths = np.asarray(pc.list_value_length(values))
            if (lengths != dim).any():
                row = int(np.argmax(lengths != dim))
                raise DumpError(f"{path}: column {column!r} row {seen + row} has {lengths[row]} values; "
                                f"row 0 has {dim}")
            flat = values.flatten()
            if flat.null_count:
                raise DumpError(f"{path}: column {column!r} holds a null value near row {seen}")
            yield batch, np.asarray(flat.to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, dim)
            seen += batch.num_rows

    def write_embeddings(target: BinaryIO) -> None:
        np.lib.format.write_array_header_2_0(target, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                      "fortran_order": False, "shape": (rows, dim)})
        for _, block in batches():
            target.write(np.ascontiguousarray(block).tobytes())

    atomic_write(out, write_embeddings)
    if id_column and ids_out is not None:
        ids = pa.chunked_array([b.column(0) for b in dataset.to_batches(columns=[id_column], batch_size=_BATCH_ROWS)])
        if ids.null_count:
            raise DumpError(f"{path}: --id-column {id_column!r} holds nulls")
        array = ids.to_numpy()
        array = array.astype(np.int64) if array.dtype.kind in "iu" else array.astype(str)
        atomic_write(ids_out, lambda target: np.save(target, array, allow_pickle=False))


def load_row_ids(path: str | os.PathLike, rows: int, name: str) -> np.ndarray:
    """An id file: a (rows,) .npy of integers or strings, memory-mapped."""
    path = Path(path)
    ids = read_npy(path, f"{path}: {name}")
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iuU" or ids.shape != (rows,):
        raise DumpError(f"{path}: {name} must be a ({rows},) array of integers or strings (one id per row); "
                        f"got shape {ids.shape} and dtype {ids.dtype}")
    return ids


def load_ids(path: str | os.PathLike, name: str) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Positives or group labels: ``.npy`` int array, or ``.npz`` with ``indptr`` and ``indices`` (CSR)."""
    path = Path(path)
    if path.suffix == ".npz":
        archive = read_npy(path, f"{path}: {name}", mmap_mode=None)
        try:
            with archive:
                if not {"indptr", "indices"} <= set(archive.files):
                    raise DumpError(f"{path}: a CSR .npz needs arrays 'indptr' and 'indices'; has {archive.files}")
                return archive["indptr"], archive["indices"]
        except DumpError:
            raise
        except Exception as error:  # a truncated or damaged member (BadZipFile, CRC, header errors)
            raise DumpError(f"{path}: {name}: damaged .npz ({type(error).__name__}: {error})") from None
    array = read_npy(path, f"{path}: {name}", mmap_mode=None)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu":
        raise DumpError(f"{path}: {name} must hold integers; got {getattr(array, 'dtype', type(array).__name__)}")
    return array
