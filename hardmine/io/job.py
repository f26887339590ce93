"""The resumable, memory-bounded offline mining job behind ``hardmine mine``.

Layout: ``OUT.parts/manifest.json`` (parameters, input fingerprints, block size,
library version) and ``OUT.parts/part-NNNNNN.npz``, one per finished query block,
each written atomically. ``--resume`` skips finished blocks; the final ``OUT`` is
merged from the parts atomically, so an interrupted job never leaves a partial OUT.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _precision, _validation, api, backends, cluster
from ..mining import mining_options
from ..mining.pipeline import POSITIVES_NEEDED
from . import state
from .dumps import DumpError
from .inputs import check_inputs, load_inputs
from .outputs import remove_stale_temps, write_json, write_negatives, write_npz
from .progress import Progress
from .state import JobError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}
#: fewest query rows per block; below this the per-block overhead dominates
MIN_BLOCK_ROWS = 256
#: most query rows per block (the engine parallelises inside a block)
MAX_BLOCK_ROWS = 65536


def parse_size(text: str) -> int:
    match = _SIZE.match(text or "")
    if not match or (match.group(2) or "").lower() not in _UNITS:
        raise JobError(f"--memory-limit: cannot read {text!r}; use e.g. 4GB, 512MiB or 800000000")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


@dataclass
class Job:
    queries: str
    candidates: str
    out: str
    mining: dict[str, Any]
    positives: str | None = None
    query_groups: str | None = None
    candidate_groups: str | None = None
    exclude_keys: str | None = None
    column: str | None = None
    id_column: str | None = None
    query_ids: str | None = None
    candidate_ids: str | None = None
    clusters: tuple[int, int] = (64, 64)
    cluster_thresholds: tuple[float, float] | None = None
    memory_limit: str | None = None
    block_rows: int | None = None
    threads: int | None = None
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False


#: resident memory of the interpreter with NumPy, Numba, pyarrow and hardmine loaded
#: (about 75 MiB measured on Linux x86-64), with headroom. A constant rather than a
#: reading, so that the same command always cuts the same blocks (--resume relies on it).
BASELINE_BYTES = 128 << 20


def block_rows_for(limit: int | None, dim: int, window: int, num_candidates: int, num_queries: int,
                   threads: int, width: int = 0, precision: str = "fp32") -> int:
    """Query rows per block so that working memory stays under ``limit``.

    Counted: the interpreter and libraries (BASELINE_BYTES), per-candidate arrays
    (norms, groups, keys: 20 bytes each), the engine's per-thread tiles (~16 MiB
    each), and per query row its float32 copy, the score window and the outputs
    (``width`` negatives, padded, held twice while a part is written). With certified scoring
    (``int8``, ``bf16``, or ``auto``, which may choose one) also the candidates' codes and bound
    factors (d + 56 bytes each; 2 d + 56 for bf16), each query row's codes (d + 40 bytes; 2 d + 40)
    and each thread's shortlists (240 queries of at most max(16 k + 256, C / 32) entries of 12
    bytes).
    Without a limit, blocks are cut at 16384 rows, fewer if that would not fit in the
    memory available now; a row that alone would not fit is refused, naming its size.
    """
    per_row = 4 * dim + 48 * window + 24 * width + 256
    int8 = precision != "fp32"
    code_bytes = 2 * dim if precision == "bf16" else dim
    if int8:
        per_row += code_bytes + 40
    if limit is None:
        available = _validation.available_memory()
        if per_row > available // 2:
            raise JobError(f"one query row needs about {per_row / 2**30:.1f} GiB ({width:,} negatives, a rank "
                           f"window of {window:,}); only {available / 2**30:.1f} GiB is available: ask for fewer "
                           f"negatives or a narrower --rank-range")
        return max(1, min(num_queries, 16384, available // 4 // per_row))
    fixed = BASELINE_BYTES + 20 * num_candidates + threads * (16 << 20) + (32 << 20)
    if int8:
        fixed += (code_bytes + 56) * num_candidates + threads * 240 * 12 * max(16 * window + 256, num_candidates // 32)
    budget = limit - fixed
    if budget < per_row * MIN_BLOCK_ROWS:
        raise JobError(
            f"--memory-limit {limit / 2**20:.0f} MiB is too small: about {fixed / 2**20:.0f} MiB is needed before "
            f"the first block and {per_row * MIN_BLOCK_ROWS / 2**20:.0f} MiB per {MIN_BLOCK_ROWS}-row block"
        )
    return int(max(MIN_BLOCK_ROWS, min(budget // per_row, MAX_BLOCK_ROWS, max(num_queries, 1))))


def _slice_csr(positives, start: int, stop: int):
    indptr, indices = positives
    return indptr[start : stop + 1] - indptr[start], indices[indptr[start] : indptr[stop]]


def _check_parameters(job: Job) -> None:
    """Every option checked by the validators the API uses, before any input is read."""
    if job.block_rows is not None and job.block_rows < 1:
        raise JobError(f"--block-rows must be >= 1; got {job.block_rows}")
    if job.threads is not None and job.threads < 1:
        raise JobError(f"--threads must be >= 1; got {job.threads}")
    if job.mining["strategy"] == "cluster" and min(job.clusters) < 1:
        raise JobError(f"--clusters takes two cluster counts >= 1 (queries, candidates); got "
                       f"{job.clusters[0]},{job.clusters[1]}")
    if job.memory_limit:
        parse_size(job.memory_limit)
    with_positives = bool(job.positives or job.query_groups)
    options = {name: value for name, value in job.mining.items() if name not in ("metric", "backend", "precision")}
    try:
        checked = mining_options(**options, exclude_keys_given=bool(job.exclude_keys),
                                 clusters_given=job.mining["strategy"] == "cluster")
        _validation.metric(job.mining["metric"])
        _precision.check(job.mining.get("precision", "fp32"))
        backends.get(job.mining["backend"])
        if checked.strategy == "cluster":
            if job.cluster_thresholds is None:
                raise JobError("--strategy cluster needs --cluster-thresholds QUERY,CANDIDATE (centroid cosines)")
            if not with_positives:
                raise JobError("--strategy cluster needs --positives or --query-groups/--candidate-groups")
            for value, name in zip(job.cluster_thresholds, ("query_threshold", "candidate_threshold")):
                cluster.cosine_threshold(value, name)
        elif checked.positive_aware and not with_positives:
            raise JobError(POSITIVES_NEEDED)
    except (ValueError, TypeError, RuntimeError) as error:
        raise JobError(str(error)) from None


def run(job: Job) -> int:
    """Runs a job; SIGTERM behaves like Ctrl-C (the current block or conversion is dropped)."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        out = _checked_output(job)
        with state.output_lock(out):
            return _run(job, out)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _checked_output(job: Job) -> Path:
    """The output path, refused before any work when it cannot be written."""
    out = Path(job.out)
    if out.suffix.lower() not in (".parquet", ".npz", ".jsonl"):
        raise JobError(f"--out must end in .parquet, .npz or .jsonl; got {out}")
    if out.is_dir():
        raise JobError(f"--out {out} is a directory; give a file name ending in {out.suffix}")
    folder = out.parent
    if not folder.is_dir():
        raise JobError(f"--out {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JobError(f"--out {out}: folder {folder} is not writable")
    return out


def _run(job: Job, out: Path) -> int:
    if out.exists() and not job.overwrite:
        raise JobError(f"{out} exists; pass --overwrite to replace it")
    parts = out.with_name(out.name + ".parts")
    remove_stale_temps(out.parent, out.name)  # left by a run killed while merging; the lock says none is live
    if parts.is_dir():
        remove_stale_temps(parts, "part-")
    _check_parameters(job)
    try:
        inputs = load_inputs(job)
    except DumpError as error:
        raise JobError(str(error)) from None

    num_queries = inputs["num_queries"]
    width = job.mining["num_negatives"]
    if width > max(inputs["num_candidates"], 1):  # parts hold (rows, width) padded arrays: refuse the waste
        raise JobError(f"--num-negatives {width} exceeds the {inputs['num_candidates']} candidates: no query can "
                       f"have more negatives than that; ask for at most {inputs['num_candidates']}")
    window = int(job.mining["rank_range"][1] or (job.mining["rank_range"][0] + width))
    threads = job.threads or os.cpu_count() or 1
    manifest_path = parts / "manifest.json"
    if parts.exists() and not job.resume:
        if not job.overwrite:
            done = len(list(parts.glob("part-*.npz")))
            raise JobError(f"{parts} holds an unfinished run ({done} blocks done): pass --resume to continue "
                           f"or --overwrite to start over")
        shutil.rmtree(parts)
    fresh = not (job.resume and manifest_path.exists())
    if not fresh:
        try:
            old = json.loads(manifest_path.read_text())
            if not isinstance(old, dict):
                raise TypeError("not a JSON object")
        except (ValueError, TypeError, OSError) as error:
            raise JobError(f"{manifest_path} is not a hardmine manifest ({error!r}); pass --overwrite to start "
                           f"over") from None
        block_rows = state.stored_block_rows(old, manifest_path, num_queries)
        new = json.loads(json.dumps(state.manifest(job, inputs, block_rows)))  # as stored: tuples -> lists
        differences = state.differences(old, new)
        if differences:
            raise JobError(f"--resume refused: {manifest_path} does not match this run: " + "; ".join(differences))
        state.verify_parts(parts, state.plan(num_queries, block_rows), width)
    else:
        block_rows = job.block_rows or block_rows_for(
            parse_size(job.memory_limit) if job.memory_limit else None, inputs["dim"],
            min(window, inputs["num_candidates"]), inputs["num_candidates"], num_queries, threads, width,
            job.mining.get("precision", "fp32"),
        )
        if parts.exists():  # a run killed before its manifest: nothing in it can be trusted
            shutil.rmtree(parts)
        parts.mkdir(parents=True)
        write_json(manifest_path, state.manifest(job, inputs, block_rows))
    try:
        return _mine_blocks(job, out, parts, inputs, block_rows, width)
    except BaseException:
        # A fresh run that fails before saving any block leaves nothing behind, so the
        # next attempt needs no --resume or --overwrite (converted inputs are not worth keeping).
        if fresh and parts.exists() and not any(parts.glob("part-*.npz")):
            shutil.rmtree(parts, ignore_errors=True)
        raise


def _mine_blocks(job: Job, out: Path, parts: Path, inputs: dict, block_rows: int, width: int) -> int:
    """The run after its state is settled: check the inputs, mine the missing blocks, merge."""
    try:
        check_inputs(job, inputs, parts, parse_size(job.memory_limit) if job.memory_limit else None)
    except KeyboardInterrupt:
        print(f"\nhardmine mine: interrupted while reading the inputs; rerun with --resume to continue "
              f"(converted inputs are kept in {parts})", file=sys.stderr)
        return 130
    plan = state.plan(inputs["num_queries"], block_rows)
    reliability = _reliability(job, inputs) if job.mining["strategy"] == "cluster" else None
    progress = Progress(inputs["num_queries"], job.mining.get("backend", "auto"), job.quiet)
    try:
        _mine_missing(job, parts, inputs, plan, reliability, progress)
    except KeyboardInterrupt:
        progress.close()
        done = len(list(parts.glob("part-*.npz")))
        print(f"\nhardmine mine: interrupted; {done}/{len(plan)} blocks are saved in {parts}; "
              f"rerun the same command with --resume to continue", file=sys.stderr)
        return 130
    finally:
        progress.close()
    state.verify_parts(parts, plan, width)  # parts written by this run and any an earlier one left
    write_negatives(out, lambda: _saved_blocks(parts, plan, inputs.get("query_ids"), inputs.get("candidate_ids")))
    shutil.rmtree(parts)
    if not job.quiet:
        print(f"hardmine mine: wrote {out} ({inputs['num_queries']:,} queries)", file=sys.stderr)
    return 0


def _reliability(job: Job, inputs: dict):
    """The clusters of the whole query and candidate sets, built once for every block."""
    if not job.quiet:
        print(f"hardmine mine: clustering queries and candidates ({job.clusters[0]} and {job.clusters[1]} "
              f"clusters)", file=sys.stderr)
    grouped = {"query_groups": inputs["query_groups"], "candidate_groups": inputs["candidate_groups"]} if (
        "query_groups" in inputs) else {"positives": inputs["positives"]}
    return cluster.reliability(
        inputs["queries"].shards, inputs["candidates"].shards, **grouped, n_query_clusters=job.clusters[0],
        n_candidate_clusters=job.clusters[1], query_threshold=job.cluster_thresholds[0],
        candidate_threshold=job.cluster_thresholds[1], seed=job.mining["seed"], backend=job.mining["backend"])


def _mine_missing(job: Job, parts: Path, inputs: dict, plan: list[tuple[int, int]], reliability,
                  progress: Progress) -> None:
    """Mines every block without a saved part, each written atomically as it finishes."""
    finished = sum(stop - start for block, (start, stop) in enumerate(plan) if state.part_path(parts, block).exists())
    progress.update(finished)
    for block, (start, end) in enumerate(plan):
        if state.part_path(parts, block).exists():
            continue
        kwargs = dict(job.mining)
        if "positives" in inputs:
            kwargs["positives"] = _slice_csr(inputs["positives"], start, end)
        if "query_groups" in inputs:
            kwargs["query_groups"] = inputs["query_groups"][start:end]
            kwargs["candidate_groups"] = inputs["candidate_groups"]
        if "exclude_keys" in inputs:
            kwargs["exclude_keys"] = inputs["exclude_keys"]
        if reliability is not None:
            kwargs["clusters"] = reliability
        result = api.mine(inputs["queries"].rows(start, end), inputs["candidates"].shards, num_threads=job.threads,
                          check_finite=False, query_offset=start, **kwargs)
        write_npz(state.part_path(parts, block), {
            "negative_ids": result.indices, "negative_scores": result.scores,
            "positive_score": result.positive_scores, "num_valid": result.num_valid,
        })
        finished += end - start
        progress.update(finished, final=finished == inputs["num_queries"])


def _saved_blocks(parts: Path, plan: list[tuple[int, int]], query_ids, candidate_ids):
    """The saved parts in order, one at a time, with row numbers mapped to ids."""
    for block, (start, stop) in enumerate(plan):
        with np.load(state.part_path(parts, block)) as part:
            columns = {name: part[name] for name in part.files}
        rows = np.arange(start, stop, dtype=np.int64)
        columns["query_id"] = np.asarray(query_ids[rows]) if query_ids is not None else rows
        if candidate_ids is not None:
            found = columns["negative_ids"]
            named = np.asarray(candidate_ids[np.maximum(found, 0).ravel()]).reshape(found.shape)
            columns["negative_ids"] = np.where(found >= 0, named, "" if named.dtype.kind == "U" else -1)
        yield columns
