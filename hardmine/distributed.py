"""Scale-out on Ray: the offline job of ``hardmine mine`` with its query blocks run as Ray core
tasks, one per block of the same plan, giving the bytes of a single-process run.

Each task runs the single-process block function (:func:`hardmine.io.blocks.mine_block`: same
shards, ``query_offset`` and seeded draws), writes its part atomically into ``OUT.parts/`` and
returns only ``(block, rows, sha256)``. The driver alone writes the manifest, checks each part
against the hash its task returned, and merges the parts in block order. A task that is retried
(its worker or node lost) or run twice writes the same bytes again, so nothing is lost or mixed;
``resume=True`` continues from the parts on disk after the driver itself was killed. Ray is the
optional extra ``pip install "hardmine[ray]"``, imported only here, only when used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any

from .io import blocks, state, stores
from .io.inputs import load_inputs, open_dumps
from .io.job import Job, JobError, run

#: ``hardmine mine`` options that are mining parameters (the rest describe inputs and the run)
MINING_DEFAULTS = {"num_negatives": 5, "strategy": "top", "rank_range": (0, None), "margin": None,
                   "relative_margin": None, "max_score": None, "min_score": None, "temperature": None, "seed": 0,
                   "metric": "dot", "backend": "auto", "precision": "fp32"}
_JOB_OPTIONS = {field.name for field in dataclasses.fields(Job)} - {"queries", "candidates", "out", "mining",
                                                                    "blocks"}
_ADDRESS = re.compile(r"^(auto|local(?::(\d+))?|([^:\s]+):(\d+))$")


def mine(queries: str | os.PathLike, candidates: str | os.PathLike, out: str | os.PathLike, *,
         address: str | None = None, cpus_per_task: int = 1, gpus_per_task: float = 0, max_retries: int = 3,
         **options: Any) -> Path | str:
    """Runs ``hardmine mine`` on a Ray cluster and returns the merged output (a path, or the URI).

    ``address``: ``"auto"`` (the cluster this machine belongs to, e.g. after ``ray start``),
    ``"local"`` / ``"local:N"`` (a one-machine cluster of N CPUs started for this job) or
    ``"HOST:PORT"`` (a head node's GCS address); None means ``"auto"``. ``options`` are those of
    ``hardmine mine`` with underscores (``num_negatives=10``, ``positives="pos.npy"``,
    ``block_rows=4096``, ``resume=True``, ...); ``threads`` defaults to ``cpus_per_task``.
    Raises :class:`hardmine.io.state.JobError` (what is wrong and what to do) on bad input,
    an unreachable cluster, a missing extra or a failed block; ``KeyboardInterrupt`` when
    interrupted (the parts saved so far stay for ``resume=True``).
    """
    unknown = sorted(set(options) - set(MINING_DEFAULTS) - _JOB_OPTIONS)
    if unknown:
        raise TypeError(f"unknown options {unknown}; use the names of hardmine mine's options with underscores")
    mining = {name: options.pop(name, default) for name, default in MINING_DEFAULTS.items()}
    mining["rank_range"] = tuple(mining["rank_range"])
    job = Job(queries=str(queries), candidates=str(candidates), out=str(out), mining=mining, **options)
    code = run(job, RayExecutor(address or "auto", cpus_per_task, gpus_per_task, max_retries))
    if code == 130:
        raise KeyboardInterrupt
    return str(out) if "://" in str(out) else Path(out)


class RayExecutor:
    """Mines an offline job's missing blocks as Ray tasks (see the module docstring)."""

    def __init__(self, address: str, cpus_per_task: int = 1, gpus_per_task: float = 0, max_retries: int = 3):
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise JobError(f"--ray takes auto, local, local:N or HOST:PORT; got {address!r}")
        if isinstance(cpus_per_task, bool) or not isinstance(cpus_per_task, int) or cpus_per_task < 1:
            raise JobError(f"--cpus-per-task must be an integer >= 1; got {cpus_per_task!r}")
        if not isinstance(gpus_per_task, (int, float)) or gpus_per_task < 0:
            raise JobError(f"--gpus-per-task must be >= 0; got {gpus_per_task!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise JobError(f"--max-retries must be an integer >= 0; got {max_retries!r}")
        self.address, self.cpus, self.gpus, self.retries = address, cpus_per_task, gpus_per_task, max_retries
        #: engine threads per task when the job names none (the scores' bytes depend on it)
        self.threads = cpus_per_task
        self.ray = None
        self.joined = False  # whether connect() called ray.init (and close() must leave)

    def connect(self, job: Job) -> None:
        """Imports Ray and joins (or, for ``local``, starts) the cluster; refuses clearly when the
        extra is missing, the address does not answer or the job cannot use the tasks' resources,
        before the job writes anything. A process already connected to Ray keeps its connection."""
        if self.gpus and job.mining.get("backend", "auto") == "auto":
            raise JobError("--gpus-per-task needs --backend cuda or cupy: with host inputs 'auto' takes the CPU")
        try:
            import ray
        except ImportError:
            raise JobError('--ray needs Ray, an optional extra: pip install "hardmine[ray]"') from None
        if ray.is_initialized():
            self.ray = ray
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine unless asked
        match = _ADDRESS.match(self.address)
        settings: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.address.startswith("local"):
            cpus = int(match.group(2)) if match.group(2) else None
            if cpus is not None and cpus < self.cpus:
                raise JobError(f"--ray {self.address} has fewer CPUs than one task takes (--cpus-per-task "
                               f"{self.cpus})")
            settings.update(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
        elif self.address == "auto":
            settings["address"] = "auto"
        else:
            host, port = match.group(3), int(match.group(4))
            try:  # Ray itself would wait minutes on an address that does not answer
                socket.create_connection((host, port), timeout=5).close()
            except OSError as error:
                raise JobError(f"--ray {self.address}: no Ray head answers there ({error}); check the address "
                               f"(the head's GCS port, 6379 by default) and that `ray start --head` runs") from None
            settings["address"] = self.address
        try:
            ray.init(**settings)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise JobError(f"--ray {self.address}: could not join the Ray cluster: {error}") from None
        self.ray, self.joined = ray, True

    def close(self) -> None:
        """Leaves the cluster it joined (a ``local`` one is stopped; a shared one keeps running)."""
        if self.joined:
            self.ray.shutdown()
        self.ray, self.joined = None, False

    def mine(self, job: Job, parts, run: str, plan: list[tuple[int, int]], reliability, progress) -> None:
        """Submits one task per missing block and waits for them, checking each part's hash."""
        ray = self.ray
        # workers have other working directories: every path absolute
        worker_job = dataclasses.replace(job, quiet=True, **{name: state.absolute(getattr(job, name))
                                                              for name in state.PATHS})
        if isinstance(parts, stores.Folder):
            parts = stores.Folder(parts.root.absolute())
        task = ray.remote(_block_task).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
                                               retry_exceptions=False)
        shared = ray.put(reliability)
        saved = set(parts.names())
        missing = [block for block in range(len(plan)) if state.part_name(block) not in saved]
        done_rows = sum(stop - start for block, (start, stop) in enumerate(plan) if state.part_name(block) in saved)
        done_blocks = len(plan) - len(missing)
        pending = {task.remote(worker_job, parts, run, block, *plan[block], shared): block for block in missing}
        progress.update(done_rows, blocks=f"{done_blocks}/{len(plan)}", workers=self._workers())
        try:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in finished:
                    block = pending.pop(ref)
                    rows, digest = self._result(ray, ref, block)
                    arrays = blocks.read_part(parts, block)
                    if rows != plan[block][1] - plan[block][0] or state.content_hash(arrays) != digest:
                        raise JobError(f"block {block}: its part does not hold what its task mined (hash or "
                                       f"rows differ); is {parts} shared by another run?")
                    done_rows += rows
                    done_blocks += 1
                progress.update(done_rows, final=not pending, blocks=f"{done_blocks}/{len(plan)}",
                                workers=self._workers())
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _result(self, ray, ref, block: int) -> tuple[int, str]:
        try:
            _, rows, digest = ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = error.cause if isinstance(error.cause, Exception) else error
            raise JobError(f"block {block} failed on its worker: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as error:  # worker or node lost more often than --max-retries
            raise JobError(f"block {block} was lost {self.retries + 1} times ({type(error).__name__}); the saved "
                           f"parts are kept: rerun with --resume (and more --max-retries)") from None
        return rows, digest

    def _workers(self) -> int:
        """How many tasks the live nodes can run at once."""
        alive = [node.get("Resources", {}) for node in self.ray.nodes() if node.get("Alive")]
        slots = sum(resources.get("CPU", 0) for resources in alive) // self.cpus
        if self.gpus:
            slots = min(slots, sum(resources.get("GPU", 0) for resources in alive) // self.gpus)
        return int(slots)


#: the inputs a worker opened for the last job it served (tasks of one job reuse them)
_opened: dict[str, dict] = {}


def _block_task(job: Job, parts, run: str, block: int, start: int, stop: int, reliability):
    """A Ray task: one block of the plan, from the inputs the driver checked (headers only here)."""
    key = json.dumps([str(parts), dataclasses.asdict(job)], sort_keys=True, default=str)
    if key not in _opened:
        _opened.clear()
        inputs = load_inputs(job, fingerprints=False)
        open_dumps(job, inputs, parts, quiet=True)
        _opened[key] = inputs
    return blocks.mine_block(job, _opened[key], parts, run, block, start, stop, reliability)
