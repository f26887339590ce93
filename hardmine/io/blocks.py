"""One query block of the offline job, as every executor runs it (the single process, an array
task with ``--blocks``, a Ray task): mine the block, write its part atomically, return
``(block, rows, sha256)``. A part also records the identity of the kernel that scored it, so
that a merge never mixes parts whose bytes could differ."""

from __future__ import annotations

import io
import json
import os
import platform

import numpy as np

from .. import _precision, api, backends
from ..info import installed_version
from . import state
from .outputs import npz_writer
from .state import JobError

#: identity fields shown not to change a part's bytes: with int8 codes the products are exact
#: integers on every ISA path, so the screen, the shortlists and the fallbacks, hence the bytes,
#: are the same (tests/test_distributed_blocks.py mines a block on each). The thread count is not
#: neutral: it sets the score tiles' shape, and with it float32 rounding.
NEUTRAL = {"int8": ("products",)}


def identity(job) -> dict:
    """The score kernel a worker uses for ``job``: backend, the BLAS and its core type chosen at
    run time, the certified products kernel, the score dtype and the versions that change bytes."""
    precision = job.mining.get("precision", "fp32")
    backend = backends.get(job.mining.get("backend", "auto"), precision="fp32" if precision == "auto" else precision)
    if backend.name == "cpu":
        blas = backend.build_info["blas"]
        tiles = dict(backend.tiles(job.threads), simd=backend.build_info["simd"])
    else:
        tiles = {"threads": job.threads or os.cpu_count()}
        from threadpoolctl import threadpool_info

        blas = "; ".join(sorted(f"{lib['internal_api']} {lib['version']} {lib.get('architecture')}"
                                for lib in threadpool_info() if lib["user_api"] == "blas"
                                and "numpy" in lib["filepath"])) or "numpy without a known BLAS"
    codes = {"int8": ("int8",), "bf16": ("bf16",), "auto": _precision.AUTO_ORDER}.get(precision, ())
    products = {code: _precision.kernel(code)[1] for code in codes}
    if precision == "auto":
        products["auto takes"] = _precision.auto_codes() or "fp32"
    return {"backend": backend.name, "blas": blas, "products": products or None, "scores": "float32",
            "hardmine": installed_version("hardmine"), "numpy": np.__version__,
            "numba": installed_version("numba") if backend.name == "numba" else None,
            "machine": platform.machine(), **tiles}


def slice_csr(positives, start: int, stop: int):
    indptr, indices = positives
    return indptr[start : stop + 1] - indptr[start], indices[indptr[start] : indptr[stop]]


def mine_block(job, inputs: dict, parts, run: str, block: int, start: int, stop: int, reliability=None,
               kernel: dict | None = None) -> tuple[int, int, str]:
    """Mines query rows ``start:stop`` exactly as the single-process run does (same shards,
    ``query_offset``, seeded draws) and writes ``part-NNNNNN.npz`` whole into the store ``parts``
    (:mod:`hardmine.io.stores`), with its identity (``run``: :func:`hardmine.io.state.run_digest`,
    the block, its rows and content digest) and the kernel that scored it."""
    kwargs = dict(job.mining)
    if "positives" in inputs:
        kwargs["positives"] = slice_csr(inputs["positives"], start, stop)
    if "query_groups" in inputs:
        kwargs["query_groups"] = inputs["query_groups"][start:stop]
        kwargs["candidate_groups"] = inputs["candidate_groups"]
    if "exclude_keys" in inputs:
        kwargs["exclude_keys"] = inputs["exclude_keys"]
    if reliability is not None:
        kwargs["clusters"] = reliability
    result = api.mine(inputs["queries"].rows(start, stop), inputs["candidates"].shards, num_threads=job.threads,
                      check_finite=False, query_offset=start, **kwargs)
    arrays = {"negative_ids": result.indices, "negative_scores": result.scores,
              "positive_score": result.positive_scores, "num_valid": result.num_valid}
    kernel = identity(job) if kernel is None else kernel
    recorded = state.part_identity(run, block, start, stop, arrays)
    try:
        parts.write(state.part_name(block), npz_writer({
            **arrays, "identity": _json_member(recorded), "kernel": _json_member(kernel)}))
    except FileNotFoundError:
        raise  # the parts folder is gone (a merge meanwhile): the caller decides
    except OSError as error:  # disk full, a store gone: name the part; the saved ones are kept
        raise JobError(f"writing {parts.label(state.part_name(block))} failed ({type(error).__name__}: {error}); "
                       f"the blocks saved so far are kept: fix that and rerun with --resume") from None
    return block, stop - start, recorded["content"]


def _json_member(value: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(value, sort_keys=True).encode(), dtype=np.uint8)


def read_part(parts, block: int) -> dict[str, np.ndarray]:
    """A saved part's mined arrays (its identity and kernel left out)."""
    with np.load(io.BytesIO(parts.read(state.part_name(block))), allow_pickle=False) as part:
        return {name: part[name] for name in part.files if name not in ("identity", "kernel")}


def check_kernels(kernels: dict[int, dict], precision: str) -> None:
    """Refuses to merge parts scored by kernels whose bytes may differ (``kernels``: block -> the
    identity its part records, from :func:`hardmine.io.state.verify_parts`), naming the field, the
    values and a block of each; fields in NEUTRAL are recorded but allowed to differ."""
    neutral = NEUTRAL.get(precision, ())
    first: tuple[int, dict] | None = None
    for block, kernel in sorted(kernels.items()):
        relevant = {key: value for key, value in kernel.items() if key not in neutral}
        if first is None:
            first = block, relevant
            continue
        if relevant != first[1]:
            fields = sorted(key for key in set(relevant) | set(first[1]) if relevant.get(key) != first[1].get(key))
            detail = "; ".join(f"{key}: block {first[0]} {first[1].get(key)!r}, block {block} {relevant.get(key)!r}"
                               for key in fields)
            raise JobError(f"merge refused: parts were scored by different kernels, whose bytes may differ "
                           f"({detail}); delete the parts of one kind (e.g. {state.part_name(block)}) and mine "
                           f"them again with the same --threads on matching machines (`hardmine info` names each "
                           f"machine's kernels)")
