"""The offline job's inputs: checked from headers and schemas first (shapes, dimensions, id
and positive files, fingerprints), then memory-mapped (Parquet/Arrow converted once) and
scanned once for NaN/inf and float32 overflow. ``job`` is a :class:`hardmine.io.job.Job`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import _rows, _validation
from .dumps import (
    Dump,
    DumpError,
    columnar_schema,
    convert_columnar,
    fingerprint,
    input_files,
    is_columnar,
    load_ids,
    load_row_ids,
)
from . import storage
from .state import JobError


def describe(path: str, columnar: bool, job) -> tuple[int, int]:
    """(rows, d) of an input, from headers and schemas only."""
    if columnar:
        rows, dim, _ = columnar_schema(path, job.column, job.id_column)
        return rows, dim
    return Dump(path).shape


def load_inputs(job, fingerprints: bool = True) -> dict:
    """Checks every input against the others from headers alone (no heavy work yet). The
    fingerprints (a SHA-256 of every input byte) are left out for a worker or a merge, whose
    driver or tasks checked them. Inputs named by URI are read from their local copies."""
    job = storage.localized(job)
    columnar = {"queries": is_columnar(job.queries), "candidates": is_columnar(job.candidates)}
    for role, path, ids in (("queries", job.queries, job.query_ids), ("candidates", job.candidates,
                                                                      job.candidate_ids)):
        if columnar[role] and ids:
            raise JobError(f"{path} is Parquet/Arrow: take its ids from a column with --id-column, not an id file")
    if job.id_column and not any(columnar.values()):
        raise JobError("--id-column applies to Parquet/Arrow inputs; for .npy dumps give --query-ids/--candidate-ids")
    if job.column and not any(columnar.values()):
        raise JobError("--column applies to Parquet/Arrow inputs; .npy dumps hold the embeddings directly")
    num_queries, query_dim = describe(job.queries, columnar["queries"], job)
    num_candidates, candidate_dim = describe(job.candidates, columnar["candidates"], job)
    if query_dim != candidate_dim:
        raise JobError(f"dimension mismatch: {job.queries} has d={query_dim}, {job.candidates} has d={candidate_dim}")
    inputs: dict[str, Any] = {"num_queries": num_queries, "num_candidates": num_candidates, "dim": query_dim,
                              "columnar": columnar, "fingerprints": {},
                              # local files (an input named by URI: its copy), for open_dumps
                              "sources": {"queries": job.queries, "candidates": job.candidates}}
    for role, path in (("queries", job.queries), ("candidates", job.candidates)):
        if fingerprints:
            inputs["fingerprints"][role] = [fingerprint(f) for f in input_files(Path(path))]
    if job.positives and (job.query_groups or job.candidate_groups):
        raise JobError("give --positives or --query-groups with --candidate-groups, not both")
    if bool(job.query_groups) != bool(job.candidate_groups):
        raise JobError("--query-groups and --candidate-groups come together")
    if job.positives:
        raw = load_ids(job.positives, "positives")
        try:
            inputs["positives"] = _validation.exclusion(raw, num_queries, num_candidates, name="positives")
        except (ValueError, TypeError) as error:
            raise JobError(f"{job.positives}: {error}") from None
        if fingerprints:
            inputs["fingerprints"]["positives"] = fingerprint(Path(job.positives))
    for name, path, length in (("query_groups", job.query_groups, num_queries),
                               ("candidate_groups", job.candidate_groups, num_candidates),
                               ("exclude_keys", job.exclude_keys, num_candidates)):
        if path:
            array = load_ids(path, name)
            if not isinstance(array, np.ndarray) or array.shape != (length,):
                raise JobError(f"{path}: {name} must be a ({length},) integer array")
            inputs[name] = array.astype(np.int64)
            if fingerprints:
                inputs["fingerprints"][name] = fingerprint(Path(path))
    for name, path, length in (("query_ids", job.query_ids, num_queries),
                               ("candidate_ids", job.candidate_ids, num_candidates)):
        if path:
            inputs[name] = load_row_ids(path, length, name.replace("_", "-"))
            if fingerprints:
                inputs["fingerprints"][name] = fingerprint(Path(path))
    return inputs


def open_dumps(job, inputs: dict, parts, quiet: bool) -> None:
    """Memory-maps the embeddings; Parquet/Arrow inputs are first converted into the local
    folder ``parts.scratch()`` (``OUT.parts/inputs``; once: a resumed run finds them there)."""
    for role, ids_name in (("queries", "query_ids"), ("candidates", "candidate_ids")):
        path = inputs["sources"][role]
        if not inputs["columnar"][role]:
            inputs[role] = Dump(path)
            continue
        cache = parts.scratch() / f"{role}.npy"
        ids_cache = parts.scratch() / f"{role}-ids.npy" if job.id_column else None
        if not cache.exists() or (ids_cache is not None and not ids_cache.exists()):
            if not quiet:
                print(f"hardmine mine: converting {path} (column {job.column!r}) to {cache}", file=sys.stderr)
            cache.parent.mkdir(parents=True, exist_ok=True)
            convert_columnar(path, job.column, job.id_column, cache, ids_cache)
        inputs[role] = Dump(cache, label=path, source=input_files(Path(path)))
        if ids_cache is not None:
            inputs[ids_name] = load_row_ids(ids_cache, inputs[role].shape[0], f"{path} --id-column")


def check_inputs(job, inputs: dict, parts, memory_limit: int | None) -> None:
    """Memory-maps the dumps and scans them once: NaN/inf, and float32 overflow under dot."""
    try:
        open_dumps(job, inputs, parts, job.quiet)
        if not job.quiet:
            print(f"hardmine mine: checking {job.queries} and {job.candidates} for NaN/inf", file=sys.stderr)
        peaks = [inputs[role].check_finite(memory_limit=memory_limit) for role in ("queries", "candidates")]
        if job.mining.get("metric", "dot") == "dot":
            _rows.check_dot_range(peaks[0], peaks[1], inputs["dim"], "queries", "candidates")
    except (DumpError, ValueError) as error:
        raise JobError(str(error)) from None
