"""Inputs named by URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``: any filesystem
``pyarrow.fs`` opens): copied once per machine into a local cache, then memory-mapped like any
dump. Each block re-reads every candidate, so a node reads them from its own disk, not the store."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from . import state
from .dumps import DumpError
from .outputs import pid_alive


def is_uri(text) -> bool:
    return isinstance(text, str) and "://" in text


def cache_root() -> Path:
    """``$HARDMINE_CACHE``, else ``~/.cache/hardmine``."""
    return Path(os.environ.get("HARDMINE_CACHE") or Path.home() / ".cache" / "hardmine")


def staged(uri: str) -> str:
    """The local copy of the file, or folder of files, at ``uri``, in the cache keyed by content.

    A store's size and modification time cannot prove a file unchanged (a rewrite may keep both),
    and ``pyarrow.fs`` reports no checksum, so every call streams the input once from the store,
    hashing it while it copies into a temp folder; the copy lands under its content's SHA-256
    (or, when that content is cached already, the temp copy is dropped). The cost is one read of
    each input per process, as a fresh copy costs; what the cache saves is every later read (each
    block re-reads the candidates). Temp folders of killed processes are removed on the next call."""
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise DumpError(f'{uri}: inputs named by URI need pyarrow: pip install "hardmine[pairs]"') from None
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DumpError(f"{uri}: no such file or directory")
        folder = info.type == pafs.FileType.Directory
        files = sorted((entry for entry in filesystem.get_file_info(pafs.FileSelector(path))
                        if entry.type == pafs.FileType.File), key=lambda entry: entry.base_name) if folder else [info]
    except (OSError, ValueError) as error:  # pyarrow's errors are OSError / ValueError subclasses
        raise DumpError(f"{uri}: cannot be read ({error})") from None
    root = cache_root() / "inputs"
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(root)
        temp = Path(tempfile.mkdtemp(prefix=f".staging.{os.getpid()}.", suffix=".tmp", dir=root))
    except OSError as error:
        raise DumpError(f"$HARDMINE_CACHE ({cache_root()}) cannot hold staged inputs: {error}; set HARDMINE_CACHE "
                        f"to a writable folder") from None
    try:
        digests = [(entry.base_name, _copy(filesystem, entry.path, temp / entry.base_name)) for entry in files]
        final = root / hashlib.sha256(repr([folder, digests]).encode()).hexdigest()[:32]
        if not final.exists():
            try:
                os.rename(temp, final)
            except OSError:
                if not final.exists():  # else another process staged the same content first
                    raise
    except OSError as error:
        raise DumpError(f"{uri}: staging into $HARDMINE_CACHE ({root}) failed: {error}") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return str(final if folder else final / info.base_name)


def _copy(filesystem, path: str, target: Path) -> str:
    """Copies one file of the store to ``target`` (fsynced) and returns its SHA-256."""
    digest = hashlib.sha256()
    with filesystem.open_input_stream(path) as source, open(target, "wb") as out:
        while chunk := source.read(8 << 20):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def remove_dead_temps(root: Path) -> None:
    """Removes the temp folders of staging processes that no longer run (their pid is in the name;
    the cache is one machine's, so the pid says whether the writer is alive)."""
    for temp in root.glob(".staging.*.tmp"):
        try:
            pid = int(temp.name.split(".")[2])
        except (ValueError, IndexError):  # not a name staged() makes
            continue
        if not pid_alive(pid):
            shutil.rmtree(temp, ignore_errors=True)


def localized(job):
    """``job`` with every input URI replaced by its local copy (plain paths unchanged)."""
    changes = {name: staged(getattr(job, name)) for name in state.PATHS if is_uri(getattr(job, name))}
    return dataclasses.replace(job, **changes) if changes else job
