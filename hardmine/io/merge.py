"""The last step of the offline job (``hardmine mine``'s and ``hardmine merge``'s): every part
verified, their kernels matched, ``OUT`` written from them in block order, the parts removed."""

from __future__ import annotations

import sys

import numpy as np

from . import blocks, state, stores
from .outputs import negatives_writer
from .state import JobError


def write_output(job, out: stores.Output, parts, inputs: dict, run: str, plan: list[tuple[int, int]], width: int,
                 refusal: str, command: str) -> int:
    """Writes ``OUT`` from the parts, each verified first (``refusal`` names the command in the
    messages, ``command`` in the closing line), and removes the parts."""
    # parts written by this run and any an earlier one left
    kernels = state.verify_parts(parts, plan, width, run=run, num_candidates=inputs["num_candidates"],
                                 refusal=refusal)
    blocks.check_kernels(kernels, job.mining.get("precision", "fp32"))
    try:
        out.write(negatives_writer(out.name, lambda: saved_blocks(parts, plan, inputs.get("query_ids"),
                                                                   inputs.get("candidate_ids")), width))
    except OSError as error:  # disk full, a store gone: the message names the file, the parts stay
        again = "hardmine merge OUT" if command == "hardmine merge" else "the same command with --resume"
        raise JobError(f"writing {out} failed ({type(error).__name__}: {error}); nothing was written there and "
                       f"the {len(plan)} parts are kept in {parts}: fix that and run {again}") from None
    live = parts.remove_merged()
    if not job.quiet:
        print(f"{command}: wrote {out} ({inputs['num_queries']:,} queries)", file=sys.stderr)
        if live:
            print(f"{command}: {live} temp file(s) of running --blocks tasks left in {parts}; those tasks "
                  f"remove them (and the folder) when they finish", file=sys.stderr)
    return 0


def saved_blocks(parts, plan: list[tuple[int, int]], query_ids, candidate_ids):
    """The saved parts in order, one at a time, with row numbers mapped to ids."""
    for block, (start, stop) in enumerate(plan):
        columns = blocks.read_part(parts, block)
        rows = np.arange(start, stop, dtype=np.int64)
        columns["query_id"] = np.asarray(query_ids[rows]) if query_ids is not None else rows
        if candidate_ids is not None:
            found = columns["negative_ids"]
            named = np.asarray(candidate_ids[np.maximum(found, 0).ravel()]).reshape(found.shape)
            columns["negative_ids"] = np.where(found >= 0, named, "" if named.dtype.kind == "U" else -1)
        yield columns
