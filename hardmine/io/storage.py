"""Inputs named by URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``: any filesystem
``pyarrow.fs`` opens): copied once per machine into a local cache, then memory-mapped like any
dump. Each block re-reads every candidate, so a node reads them from its own disk, not the store."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

from . import state
from .dumps import DumpError
from .outputs import atomic_write

def is_uri(text) -> bool:
    return isinstance(text, str) and "://" in text


def cache_root() -> Path:
    """``$HARDMINE_CACHE``, else ``~/.cache/hardmine``."""
    return Path(os.environ.get("HARDMINE_CACHE") or Path.home() / ".cache" / "hardmine")


def staged(uri: str) -> str:
    """The local copy of the file, or folder of files, at ``uri``: fetched once into the cache
    (a folder keyed by the URI and each file's name, size and modification time), each file
    written atomically, so concurrent workers on one machine share it safely."""
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise DumpError(f'{uri}: inputs named by URI need pyarrow: pip install "hardmine[pairs]"') from None
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DumpError(f"{uri}: no such file or directory")
        files = sorted((entry for entry in filesystem.get_file_info(pafs.FileSelector(path))
                        if entry.type == pafs.FileType.File), key=lambda entry: entry.base_name) if (
            info.type == pafs.FileType.Directory) else [info]
    except (OSError, ValueError) as error:  # pyarrow's errors are OSError / ValueError subclasses
        raise DumpError(f"{uri}: cannot be read ({error})") from None
    key = hashlib.sha256(repr([uri] + [(entry.base_name, entry.size, entry.mtime_ns) for entry in files]).encode())
    local = cache_root() / "inputs" / key.hexdigest()[:24] / (info.base_name or "input")
    folder = local if info.type == pafs.FileType.Directory else local.parent
    folder.mkdir(parents=True, exist_ok=True)
    for entry in files:
        target = folder / entry.base_name
        if target.exists() and target.stat().st_size == entry.size:
            continue
        with filesystem.open_input_stream(entry.path) as source:
            atomic_write(target, lambda out: shutil.copyfileobj(source, out, 8 << 20))
    return str(local)


def localized(job):
    """``job`` with every input URI replaced by its local copy (plain paths unchanged)."""
    changes = {name: staged(getattr(job, name)) for name in state.PATHS if is_uri(getattr(job, name))}
    return dataclasses.replace(job, **changes) if changes else job
