"""Where a job's parts and output live.

- :class:`Folder`, a path on a local or shared filesystem: files written atomically (temp file,
  fsync, rename), the output held under an ``flock`` for the whole run.
- :class:`Prefix`, a URI of any filesystem ``pyarrow.fs`` opens (``s3://``, ``gs://``, ``hdfs://``,
  ``file://``): each file is written whole (one PUT on an object store, where an object appears
  only once its upload completes; a temp name and a rename elsewhere), and nothing can lock it, so
  one driver (or one merge) per output is the user's to ensure.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from . import state
from .outputs import atomic_write, may_be_live, remove_stale_temps
from .storage import cache_root, is_uri

MANIFEST = state.MANIFEST


class Folder:
    """A folder on a local or shared filesystem."""

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)

    def __str__(self) -> str:
        return str(self.root)

    def label(self, name: str) -> str:
        return str(self.root / name)

    def exists(self) -> bool:
        return self.root.is_dir()

    def make(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)

    def names(self, pattern: str = "part-*.npz") -> list[str]:
        return sorted(path.name for path in self.root.glob(pattern))

    def has(self, name: str) -> bool:
        return (self.root / name).exists()

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        atomic_write(self.root / name, write)

    def create(self, name: str, data: bytes) -> None:
        """Writes ``name`` only if it does not exist (array tasks start at once): a complete temp
        file hard-linked into place, so a reader sees nothing or all of it, and one writer wins."""
        temp = self.root / f".{name}.{os.getpid()}.tmp"
        temp.write_bytes(data)
        try:
            os.link(temp, self.root / name)
        except FileExistsError:
            pass
        finally:
            temp.unlink()

    def clean_temps(self, prefix: str) -> None:
        remove_stale_temps(self.root, prefix)

    def remove_merged(self) -> int:
        """Removes a merged run's folder, except the temp files of writers that may still run (a
        late ``--blocks`` task: it notices the merge and cleans up after itself); returns how
        many were left."""
        left = 0
        for path in sorted(self.root.iterdir()) if self.root.exists() else []:
            if path.name.endswith(".tmp") and may_be_live(path):
                left += 1
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if not left:
            self.root.rmdir()
        return left

    def scratch(self) -> Path:
        """A local folder for converted inputs, removed with the parts."""
        return self.root / "inputs"

    def lock(self, name: str):
        return state.output_lock(self.root / name)


class Prefix:
    """A folder-like prefix on a ``pyarrow.fs`` filesystem, opened lazily (so it pickles to Ray tasks)."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self._opened = None

    def __getstate__(self) -> dict:
        return {"uri": self.uri, "_opened": None}

    def __str__(self) -> str:
        return self.uri

    @property
    def _fs(self):
        if self._opened is None:
            import pyarrow.fs as pafs

            self._opened = pafs.FileSystem.from_uri(self.uri)
        return self._opened

    def _path(self, name: str = "") -> str:
        return f"{self._fs[1]}/{name}" if name else self._fs[1]

    def label(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def _type(self, path: str):
        import pyarrow.fs as pafs

        return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(
            self._fs[0].get_file_info(path).type)

    def exists(self) -> bool:
        return self._type(self._path()) == "dir"

    def make(self) -> None:
        self._fs[0].create_dir(self._path(), recursive=True)

    def remove(self) -> None:
        if self.exists():
            self._fs[0].delete_dir(self._path())

    def names(self, pattern: str = "part-*.npz") -> list[str]:
        import pyarrow.fs as pafs

        listing = self._fs[0].get_file_info(pafs.FileSelector(self._path(), allow_not_found=True))
        return sorted(entry.base_name for entry in listing
                      if entry.type == pafs.FileType.File and fnmatch.fnmatchcase(entry.base_name, pattern))

    def has(self, name: str) -> bool:
        return self._type(self._path(name)) == "file"

    def delete(self, name: str) -> None:
        if self.has(name):
            self._fs[0].delete_file(self._path(name))

    def read(self, name: str) -> bytes:
        with self._fs[0].open_input_stream(self._path(name)) as source:
            return source.read()

    def write(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        """Writes into a local temp file first (the writers may seek), then uploads it in one stream."""
        filesystem = self._fs[0]
        scratch = cache_root() / "uploads"
        try:
            scratch.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise state.JobError(f"$HARDMINE_CACHE ({cache_root()}) cannot hold the upload of {self.label(name)}: "
                                 f"{error}; set HARDMINE_CACHE to a writable folder") from None
        with tempfile.TemporaryFile(dir=scratch) as local:
            write(local)
            local.seek(0)
            local_fs = filesystem.type_name == "local"
            target = self._path(f".{name}.{os.getpid()}.tmp" if local_fs else name)
            with filesystem.open_output_stream(target) as out:
                shutil.copyfileobj(local, out, 8 << 20)
            if local_fs:  # a rename makes it whole at once, as an object store's PUT does
                filesystem.move(target, self._path(name))

    def create(self, name: str, data: bytes) -> None:
        """Writes ``name`` unless it exists; two tasks racing here write the same manifest."""
        if not self.has(name):
            self.write(name, lambda out: out.write(data))

    def clean_temps(self, prefix: str) -> None:
        for name in self.names(f".{prefix}*.tmp"):
            self._fs[0].delete_file(self._path(name))

    def remove_merged(self) -> int:
        """Removes a merged run's prefix (an object store has no temp files to spare)."""
        self.remove()
        return 0

    def scratch(self) -> Path:
        """A local folder for converted inputs: in the cache (each machine converts once)."""
        return cache_root() / "converted" / hashlib.sha256(self.uri.encode()).hexdigest()[:24]

    def lock(self, name: str):
        return contextlib.nullcontext()


class Output:
    """``--out``: the store holding it, its name there, and the store of its parts ``OUT.parts``."""

    def __init__(self, out: str):
        self.text = out
        if is_uri(out):
            folder, _, self.name = out.rstrip("/").rpartition("/")
            self.folder, self.parts = Prefix(folder), Prefix(out + ".parts")
        else:
            path = Path(out)
            self.name, self.folder = path.name, Folder(path.parent)
            self.parts = Folder(path.with_name(path.name + ".parts"))

    def __str__(self) -> str:
        return self.text

    def exists(self) -> bool:
        return self.folder.has(self.name)

    def lock(self):
        return self.folder.lock(self.name)

    def write(self, write: Callable[[BinaryIO], object]) -> None:
        self.folder.write(self.name, write)

    def clean_temps(self) -> None:
        """Temp files a run killed while merging left behind (the caller knows none is live)."""
        self.folder.clean_temps(self.name)
