"""The resumable, memory-bounded offline mining job behind ``hardmine mine``.

Layout: ``OUT.parts/manifest.json`` (parameters, input fingerprints, block size,
library version) and ``OUT.parts/part-NNNNNN.npz``, one per finished query block,
each written atomically by the block function of :mod:`hardmine.io.blocks`. ``--resume``
skips finished blocks; the final ``OUT`` is merged from the parts atomically, so an interrupted
job never leaves a partial OUT. ``--blocks A:B`` mines a slice of the plan and leaves the merge
to ``hardmine merge OUT`` (array jobs); an executor (:mod:`hardmine.distributed`) may mine the
missing blocks elsewhere, while this process alone writes the manifest and merges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .. import _precision, _validation, backends, cluster
from ..mining import mining_options
from ..mining.pipeline import POSITIVES_NEEDED
from . import blocks, state, stores
from .dumps import DumpError
from .inputs import check_inputs, load_inputs, open_dumps
from .merge import write_output
from .plan import block_rows_for, parse_size
from .progress import Progress
from .state import JobError

@dataclasses.dataclass
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
    #: mine only blocks [A, B) of the plan (B None: to the end) and leave the merge to `hardmine merge`
    blocks: tuple[int, int | None] | None = None


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


def run(job: Job, executor=None) -> int:
    """Runs a job; SIGTERM behaves like Ctrl-C (the current block or conversion is dropped).

    ``executor`` (e.g. :class:`hardmine.distributed.RayExecutor`) mines the missing blocks in
    other processes; it is connected before anything is written."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        out = _checked_output(job)
        if job.blocks is not None:
            return _run_slice(job, out)
        if executor is not None:  # its tasks run with its threads unless told: the manifest records them
            job = dataclasses.replace(job, threads=job.threads or executor.threads)
            _check_parameters(job)
            executor.connect(job)
        with out.lock():
            return _run(job, out, executor)
    finally:
        if executor is not None:
            executor.close()
        signal.signal(signal.SIGTERM, previous)


def _checked_output(job: Job) -> stores.Output:
    """The output, refused before any work when it cannot be written."""
    if Path(job.out).suffix.lower() not in (".parquet", ".npz", ".jsonl"):
        raise JobError(f"--out must end in .parquet, .npz or .jsonl; got {job.out}")
    if "://" in job.out:
        output = stores.Output(job.out)
        try:
            output.folder.exists()  # reaches the store: a bad URI, bucket or credentials fail here
        except (OSError, ValueError) as error:
            raise JobError(f"--out {job.out}: cannot be reached ({error})") from None
        return output
    out = Path(job.out)
    if out.is_dir():
        raise JobError(f"--out {out} is a directory; give a file name ending in {out.suffix}")
    folder = out.parent
    if not folder.is_dir():
        raise JobError(f"--out {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JobError(f"--out {out}: folder {folder} is not writable")
    return stores.Output(job.out)


def _manifest_bytes(value: dict) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"


def _loaded(job: Job, **options) -> dict:
    try:
        return load_inputs(job, **options)
    except DumpError as error:
        raise JobError(str(error)) from None


def _width(job: Job, inputs: dict) -> int:
    width = job.mining["num_negatives"]
    if width > max(inputs["num_candidates"], 1):  # parts hold (rows, width) padded arrays: refuse the waste
        raise JobError(f"--num-negatives {width} exceeds the {inputs['num_candidates']} candidates: no query can "
                       f"have more negatives than that; ask for at most {inputs['num_candidates']}")
    return width


def _run(job: Job, out: stores.Output, executor) -> int:
    if out.exists() and not job.overwrite:
        raise JobError(f"{out} exists; pass --overwrite to replace it")
    parts = out.parts
    out.clean_temps()  # left by a run killed while merging; the lock says none is live
    if parts.exists():
        parts.clean_temps("part-")
    _check_parameters(job)
    inputs = _loaded(job)
    num_queries = inputs["num_queries"]
    width = _width(job, inputs)
    window = int(job.mining["rank_range"][1] or (job.mining["rank_range"][0] + width))
    threads = job.threads or os.cpu_count() or 1
    if parts.exists() and not job.resume:
        if not job.overwrite:
            done = len(parts.names())
            raise JobError(f"{parts} holds an unfinished run ({done} blocks done): pass --resume to continue "
                           f"or --overwrite to start over")
        parts.remove()
    fresh = not (job.resume and parts.has(stores.MANIFEST))
    if not fresh:
        block_rows, run = state.stored_run(parts, job, inputs, "--resume refused")
        state.verify_parts(parts, state.plan(num_queries, block_rows), width, run=run,
                           num_candidates=inputs["num_candidates"], refusal="--resume refused")
    else:
        block_rows = job.block_rows or block_rows_for(
            parse_size(job.memory_limit) if job.memory_limit else None, inputs["dim"],
            min(window, inputs["num_candidates"]), inputs["num_candidates"], num_queries, threads, width,
            job.mining.get("precision", "fp32"),
        )
        if parts.exists():  # a run killed before its manifest: nothing in it can be trusted
            parts.remove()
        parts.make()
        recorded = state.manifest(job, inputs, block_rows)
        run = state.run_digest(recorded)
        manifest = _manifest_bytes(recorded)
        parts.write(stores.MANIFEST, lambda out: out.write(manifest))
    try:
        return _mine_blocks(job, out, parts, inputs, run, block_rows, width, executor)
    except BaseException:
        # A fresh run that fails before saving any block leaves nothing behind, so the
        # next attempt needs no --resume or --overwrite (converted inputs are not worth keeping).
        if fresh and parts.exists() and not parts.names():
            with contextlib.suppress(OSError):  # the error on its way out matters more
                parts.remove()
        raise


def _run_slice(job: Job, out: stores.Output) -> int:
    """``--blocks A:B``: one task of an array job. Tasks run at once on one OUT, so no lock: the
    first writes the manifest (created only if absent), the others must match it, and each part
    is written atomically with fixed bytes, so a block mined twice is harmless."""
    if out.exists():
        raise JobError(f"{out} exists: its run is merged already; remove it to mine again")
    _check_parameters(job)
    inputs = _loaded(job)
    width = _width(job, inputs)
    parts = out.parts
    created = False
    if not parts.has(stores.MANIFEST):
        if job.block_rows is None:
            raise JobError("--blocks needs --block-rows: every task of an array job must cut the same plan")
        _slice(job, state.plan(inputs["num_queries"], job.block_rows), job.block_rows)  # refused before writing
        parts.make()
        parts.create(stores.MANIFEST, _manifest_bytes(state.manifest(job, inputs, job.block_rows)))
        created = True
    block_rows, run = state.stored_run(parts, job, inputs, "--blocks refused")
    if job.block_rows is not None and job.block_rows != block_rows:
        raise JobError(f"--blocks refused: --block-rows {job.block_rows}, but the run in {parts} cuts blocks of "
                       f"{block_rows} rows; every task of an array job must give the same --block-rows")
    plan = state.plan(inputs["num_queries"], block_rows)
    first, last = _slice(job, plan, block_rows)
    # the others are their tasks' and the merge's
    state.verify_parts(parts, plan, width, range(first, last), run=run, num_candidates=inputs["num_candidates"],
                       refusal="--blocks refused")
    try:
        check_inputs(job, inputs, parts, parse_size(job.memory_limit) if job.memory_limit else None)
    except KeyboardInterrupt:
        return 130
    except JobError:
        # refused inputs (NaN, overflow): every task of the run sees the same, so the run this task
        # started leaves nothing behind
        if created and not parts.names():
            with contextlib.suppress(OSError):
                parts.remove()
        raise
    progress = Progress(sum(stop - start for start, stop in plan[first:last]), job.mining.get("backend", "auto"),
                        job.quiet)
    try:
        _mine_missing(job, parts, inputs, run, plan, range(first, last), _reliability(job, inputs), progress)
    except KeyboardInterrupt:
        print(f"\nhardmine mine: interrupted; blocks saved so far are kept in {parts}", file=sys.stderr)
        return 130
    except FileNotFoundError:
        if not _merged_meanwhile(out, parts):
            raise
    finally:
        progress.close()
    if _merged_meanwhile(out, parts):
        # `hardmine merge` ran while this task mined (every block had been saved, this task's by
        # another task): what this task wrote since is not needed, and nothing is lost
        for block in range(first, last):
            with contextlib.suppress(OSError):
                parts.delete(state.part_name(block))
        with contextlib.suppress(OSError):
            parts.remove_merged()
        print(f"hardmine mine: {out} was merged while this task ran (its blocks had been saved by another "
              f"task); nothing left to do", file=sys.stderr)
        return 0
    saved = len(parts.names())
    if not job.quiet:
        print(f"hardmine mine: blocks {first}..{last - 1} saved ({saved}/{len(plan)} of the plan); once all are, "
              f"run: hardmine merge {out}", file=sys.stderr)
    return 0


def _merged_meanwhile(out: stores.Output, parts) -> bool:
    return out.exists() and not parts.has(stores.MANIFEST)


def _slice(job: Job, plan: list[tuple[int, int]], block_rows: int) -> tuple[int, int]:
    """``--blocks A:B`` as block numbers, refused unless inside ``plan``."""
    first, last = job.blocks
    last = len(plan) if last is None else last
    if not 0 <= first < last <= len(plan):
        raise JobError(f"--blocks {job.blocks[0]}:{'' if job.blocks[1] is None else job.blocks[1]} is outside "
                       f"the plan: {len(plan)} blocks of {block_rows} query rows (0:{len(plan)})")
    return first, last


def _mine_blocks(job: Job, out: stores.Output, parts, inputs: dict, run: str, block_rows: int, width: int,
                 executor) -> int:
    """The run after its state is settled: check the inputs, mine the missing blocks, merge."""
    try:
        check_inputs(job, inputs, parts, parse_size(job.memory_limit) if job.memory_limit else None)
    except KeyboardInterrupt:
        print(f"\nhardmine mine: interrupted while reading the inputs; rerun with --resume to continue "
              f"(converted inputs are kept in {parts})", file=sys.stderr)
        return 130
    plan = state.plan(inputs["num_queries"], block_rows)
    reliability = _reliability(job, inputs)
    progress = Progress(inputs["num_queries"], job.mining.get("backend", "auto"), job.quiet)
    try:
        if executor is None:
            _mine_missing(job, parts, inputs, run, plan, range(len(plan)), reliability, progress)
        else:
            executor.mine(job, parts, run, plan, reliability, progress)
    except KeyboardInterrupt:
        progress.close()
        done = len(parts.names())
        print(f"\nhardmine mine: interrupted; {done}/{len(plan)} blocks are saved in {parts}; "
              f"rerun the same command with --resume to continue", file=sys.stderr)
        return 130
    finally:
        progress.close()
    return write_output(job, out, parts, inputs, run, plan, width, "--resume refused", "hardmine mine")


def merge(out: str | os.PathLike, *, overwrite: bool = False, quiet: bool = False) -> int:
    """``hardmine merge OUT``: writes ``OUT`` from the parts every ``--blocks`` task saved in
    ``OUT.parts``, once all of the plan's blocks are there and their kernels match."""
    out = stores.Output(str(out))
    parts = out.parts
    if not parts.has(stores.MANIFEST):
        raise JobError(f"nothing to merge: {parts.label(stores.MANIFEST)} does not exist (run hardmine mine --blocks "
                       f"first)")
    with out.lock():
        if out.exists() and not overwrite:
            raise JobError(f"{out} exists; pass --overwrite to replace it")
        out.clean_temps()  # (the parts' temp files may be live --blocks tasks': left alone)
        stored = state.read_manifest(parts, "merge refused")
        job = _job_from_manifest(stored, str(out), quiet)
        inputs = _loaded(job)  # fingerprinted: the manifest names the inputs the parts were mined from
        block_rows, run = state.stored_run(parts, job, inputs, "merge refused")
        plan = state.plan(inputs["num_queries"], block_rows)
        saved = set(parts.names())
        missing = [block for block in range(len(plan)) if state.part_name(block) not in saved]
        if missing:
            raise JobError(f"merge refused: {len(missing)} of {len(plan)} blocks are not saved yet "
                           f"({state.ranges(missing)}); mine them with hardmine mine --blocks A:B")
        open_dumps(job, inputs, parts, quiet=True)  # the ids of Parquet/Arrow inputs, converted by the tasks
        return write_output(job, out, parts, inputs, run, plan, _width(job, inputs), "merge refused",
                            "hardmine merge")


def _job_from_manifest(stored: dict, out: str, quiet: bool):
    """The job a manifest records (its paths and parameters), for `hardmine merge`."""
    try:
        parameters = dict(stored["parameters"])
        extra = {name: parameters.pop(name) for name in ("threads", "column", "id_column", "clusters", "cluster_thresholds")
                 if name in parameters}
        paths = {name: stored["paths"][name] for name in state.PATHS}
        return Job(out=out, mining=parameters, **paths, **extra, quiet=quiet)
    except (KeyError, TypeError) as error:
        raise JobError(f"{out}.parts/manifest.json lacks {error} (written by another hardmine version, or "
                       f"damaged); mine again with --overwrite") from None


def _reliability(job: Job, inputs: dict):
    """The clusters of the whole query and candidate sets, built once for every block."""
    if job.mining["strategy"] != "cluster":
        return None
    if not job.quiet:
        print(f"hardmine mine: clustering queries and candidates ({job.clusters[0]} and {job.clusters[1]} "
              f"clusters)", file=sys.stderr)
    grouped = {"query_groups": inputs["query_groups"], "candidate_groups": inputs["candidate_groups"]} if (
        "query_groups" in inputs) else {"positives": inputs["positives"]}
    return cluster.reliability(
        inputs["queries"].shards, inputs["candidates"].shards, **grouped, n_query_clusters=job.clusters[0],
        n_candidate_clusters=job.clusters[1], query_threshold=job.cluster_thresholds[0],
        candidate_threshold=job.cluster_thresholds[1], seed=job.mining["seed"], backend=job.mining["backend"])


def _mine_missing(job: Job, parts, inputs: dict, run: str, plan: list[tuple[int, int]], chosen: range,
                  reliability, progress: Progress) -> None:
    """Mines every chosen block without a saved part, in this process, one after another."""
    saved = set(parts.names())
    missing = [block for block in chosen if state.part_name(block) not in saved]
    total = sum(plan[block][1] - plan[block][0] for block in chosen)
    finished = total - sum(plan[block][1] - plan[block][0] for block in missing)
    progress.update(finished)
    kernel = blocks.identity(job)
    for block in missing:
        start, stop = plan[block]
        blocks.mine_block(job, inputs, parts, run, block, start, stop, reliability, kernel)
        finished += stop - start
        progress.update(finished, final=finished == total)
