"""A run's state on disk, trusted only once checked: the output lock (one writer per
``OUT``), the manifest (parameters, input fingerprints, block plan) and the saved parts."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..info import installed_version


class JobError(Exception):
    """A job that cannot start or continue; the CLI prints it and exits with status 2."""


#: the run's manifest, in its parts store
MANIFEST = "manifest.json"


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``OUT`` for the whole run (mining and merge): a second
    run on the same output refuses at once, naming the holder. The kernel drops the lock
    when its holder dies, so a lock file left by a killed run is simply taken over."""
    path = lock_path(out)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(handle)
            raise JobError(f"{out} is being written by another hardmine mine ({holder}); wait for it to finish "
                           f"or stop it; --overwrite does not take over a running job") from None
        # A run that just finished may have removed the file between our open and flock:
        # then this lock guards nothing, so take a fresh file.
        try:
            same = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(handle)
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"pid {os.getpid()} on {socket.gethostname()}, started "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(handle)


def plan(num_queries: int, block_rows: int) -> list[tuple[int, int]]:
    return [(start, min(num_queries, start + block_rows)) for start in range(0, num_queries, block_rows)]


def part_name(block: int) -> str:
    return f"part-{block:06d}.npz"


#: every part holds these arrays, with these dtypes and per-row widths (None: one value per row)
_PART_ARRAYS = {"negative_ids": (np.int64, True), "negative_scores": (np.float32, True),
                "positive_score": (np.float32, False), "num_valid": (np.int64, False)}

#: the fields every part's kernel member holds (:func:`hardmine.io.blocks.identity`)
KERNEL_FIELDS = frozenset({"backend", "blas", "products", "scores", "hardmine", "numpy", "numba", "machine",
                           "threads"})


def run_digest(manifest: dict) -> str:
    """The identity of a run: SHA-256 of its manifest (options, input fingerprints, block plan) as
    canonical JSON. Every part carries it, so that a part of another run is never taken."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of a part's mined arrays (names, dtypes, shapes, bytes), its identity left out."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def part_identity(run: str, block: int, start: int, stop: int, arrays: dict[str, np.ndarray]) -> dict:
    """What a part says of itself: its run, block, global query rows and content digest."""
    return {"run": run, "block": block, "rows": [start, stop], "content": content_hash(arrays)}


def verify_parts(parts, plan: list[tuple[int, int]], width: int, chosen: range | None = None, *, run: str,
                 num_candidates: int, refusal: str) -> dict[int, dict]:
    """Refuses (``refusal``: "--resume refused", "merge refused", ...), naming the part and the
    field, any saved block in the store ``parts`` (:mod:`hardmine.io.stores`) that is not in the
    plan, or (of the ``chosen`` blocks, default all) unreadable, of the wrong rows or columns, of
    another run (``run``: :func:`run_digest`) or block, whose content is not what it recorded, or
    whose values are out of range (``num_valid`` in [0, width], ids in [-1, num_candidates)): a
    resume or a merge trusts nothing it did not check. Returns the kernel each checked part
    records, for :func:`hardmine.io.blocks.check_kernels`."""
    names = set(parts.names("part-*.npz"))
    expected = {part_name(block) for block in range(len(plan))}
    strays = sorted(names - expected)
    if strays:
        raise JobError(f"{refusal}: {parts.label(strays[0])} is not a block of this run's plan ({len(plan)} "
                       f"blocks); remove it, or{_advice(refusal)}")
    kernels = {}
    for block in chosen if chosen is not None else range(len(plan)):
        name = part_name(block)
        if name not in names:
            continue
        try:
            problem, kernel = _check_part(parts.read(name), block, plan[block], width, run, num_candidates)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            problem, kernel = f"is unreadable ({type(error).__name__}: {error})", None
        if problem is not None:
            raise JobError(f"{refusal}: {parts.label(name)} {problem}; delete that file to have block {block} "
                           f"mined again, or{_advice(refusal)}")
        kernels[block] = kernel
    return kernels


def _advice(refusal: str) -> str:
    return (" mine it again (hardmine mine --blocks), or mine again with --overwrite" if refusal.startswith("merge")
            else " pass --overwrite to start over")


def _check_part(data: bytes, block: int, rows: tuple[int, int], width: int, run: str,
                num_candidates: int) -> tuple[str | None, dict | None]:
    """(what is wrong with a part's bytes or None, the kernel it records)."""
    start, stop = rows
    arrays = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as part:
        for array_name, (dtype, wide) in _PART_ARRAYS.items():
            if array_name not in part.files:
                return f"has no array {array_name!r}", None
            array = part[array_name]
            shape = (stop - start, width) if wide else (stop - start,)
            if array.shape != shape or array.dtype != dtype:
                return (f"holds {array_name} of shape {array.shape} and dtype {array.dtype}; block {block} "
                        f"(query rows {start}..{stop - 1}) needs {shape} {np.dtype(dtype)}"), None
            arrays[array_name] = array
        members = {}
        for member in ("identity", "kernel"):
            if member not in part.files:
                return f"has no {member!r} member (written by an older hardmine, or not by hardmine)", None
            try:
                members[member] = json.loads(part[member].tobytes())
            except (ValueError, UnicodeDecodeError):
                return f"holds a {member!r} member that is not JSON", None
    identity, kernel = members["identity"], members["kernel"]
    if not isinstance(identity, dict) or set(identity) != {"run", "block", "rows", "content"}:
        return "holds a malformed 'identity' member (expected run, block, rows and content)", None
    if identity["run"] != run:
        return ("belongs to another run (its options, inputs or plan differ from this run's manifest: run "
                f"{str(identity['run'])[:12]}..., this run {run[:12]}...)"), None
    if identity["block"] != block or identity["rows"] != [start, stop]:
        return (f"says it is block {identity['block']!r} (rows {identity['rows']!r}), not block {block} "
                f"(rows [{start}, {stop}])"), None
    if identity["content"] != content_hash(arrays):
        return "does not hold what it recorded (its content digest differs: the file was altered)", None
    if not isinstance(kernel, dict) or set(kernel) < KERNEL_FIELDS or not all(isinstance(k, str) for k in kernel):
        return f"holds a malformed 'kernel' member (expected an object with {sorted(KERNEL_FIELDS)})", None
    valid, ids = arrays["num_valid"], arrays["negative_ids"]
    bad = np.flatnonzero((valid < 0) | (valid > width))
    if bad.size:
        return f"holds num_valid {int(valid[bad[0]])} at row {start + int(bad[0])}, outside [0, {width}]", None
    bad = np.flatnonzero(((ids < -1) | (ids >= num_candidates)).any(axis=1))
    if bad.size:
        row = ids[bad[0]]
        value = int(row[(row < -1) | (row >= num_candidates)][0])
        return (f"holds negative id {value} at row {start + int(bad[0])}, outside [-1, {num_candidates}) "
                f"(the candidates)"), None
    return None, kernel


#: the Job fields naming input files, recorded (absolute) so that `hardmine merge` can rebuild the job
PATHS = ("queries", "candidates", "positives", "query_groups", "candidate_groups", "exclude_keys", "query_ids",
         "candidate_ids")


def manifest(job, inputs: dict, block_rows: int) -> dict:
    """What a run's parts depend on (each part also records its kernel, :mod:`hardmine.io.blocks`)."""
    return {
        "hardmine_version": installed_version("hardmine") or "unknown",
        "parameters": dict(job.mining, threads=job.threads, column=job.column, id_column=job.id_column,
                           **({"clusters": job.clusters, "cluster_thresholds": job.cluster_thresholds}
                              if job.mining["strategy"] == "cluster" else {})),
        "paths": {name: absolute(getattr(job, name)) for name in PATHS},
        "inputs": inputs["fingerprints"],
        "num_queries": inputs["num_queries"],
        "block_rows": block_rows,
        # the global query rows of each block (part-NNNNNN.npz holds block NNNNNN): what every
        # executor (this process, an array task, a Ray task) mines
        "blocks": plan(inputs["num_queries"], block_rows),
    }


def absolute(path: str | None) -> str | None:
    """A path made absolute; a URI (``s3://...``, ``file://...``) or None as it is."""
    return path if not path or "://" in path else os.path.abspath(path)


def ranges(blocks: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    spans: list[list[int]] = []
    for block in blocks:
        if spans and block == spans[-1][1] + 1:
            spans[-1][1] = block
        else:
            spans.append([block, block])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


def stored_block_rows(old: dict, manifest_path: str, refusal: str) -> int:
    """The block size a resumed run must keep, refused unless it is a positive integer."""
    rows = old.get("block_rows")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise JobError(f"{refusal}: {manifest_path} has block_rows {rows!r}; it must be an integer >= 1 "
                       f"(the manifest was edited or damaged);{_advice(refusal)}")
    return rows


def read_manifest(parts, refusal: str) -> dict:
    """The manifest in the store ``parts`` as a dict, refused (naming the file) unless it is one."""
    path = parts.label(MANIFEST)
    try:
        stored = json.loads(parts.read(MANIFEST))
    except (ValueError, OSError) as error:
        problem = f"{type(error).__name__}: {error}"
    else:
        if isinstance(stored, dict):
            return stored
        problem = "not a JSON object"
    raise JobError(f"{refusal}: {path} is not a hardmine manifest ({problem});{_advice(refusal)}")


def stored_run(parts, job, inputs: dict, refusal: str) -> tuple[int, str]:
    """The block size and identity (:func:`run_digest`) of the run whose manifest is in ``parts``,
    refused unless this run (its options and input fingerprints) matches it, field by field."""
    old = read_manifest(parts, refusal)
    path = parts.label(MANIFEST)
    block_rows = stored_block_rows(old, path, refusal)
    new = json.loads(json.dumps(manifest(job, inputs, block_rows)))  # as stored: tuples -> lists
    found = differences(old, new)
    if found:
        raise JobError(f"{refusal}: {path} does not match this run: " + "; ".join(found))
    return block_rows, run_digest(new)


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What differs between two manifests, field by field (into dicts, and lists of dicts)."""
    out = []
    for key in sorted(set(old) | set(new)):
        out += _compare(old.get(key), new.get(key), f"{prefix}{key}")
    return out


def _compare(a, b, name: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return differences(a, b, f"{name}.")
    if (isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and a != b
            and all(isinstance(x, dict) for x in a + b)):  # e.g. the fingerprints of an input's files
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in _compare(x, y, f"{name}[{i}]")]
    return [] if a == b else [f"{name}: was {_short(a)}, now {_short(b)}"]


def _short(value, limit: int = 120) -> str:
    """A value's repr, cut in the middle past ``limit`` characters (a block plan can be long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}, ..., {text[-limit // 2:]}"
