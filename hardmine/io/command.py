"""The ``hardmine mine`` and ``hardmine merge`` subcommands: the offline job's options read into a
:class:`hardmine.io.job.Job` (and, with ``--ray``, an executor) and its errors turned into exit codes."""

from __future__ import annotations

import argparse
import sys

from . import job as offline


def _rank_range(text: str) -> tuple[int, int | None]:
    first, sep, last = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(first or 0), (int(last) if last else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B or A: (e.g. 10:100); got {text!r}") from None


def _blocks(text: str) -> tuple[int, int | None]:
    first, last = _rank_range(text)
    if first < 0 or (last is not None and last <= first):
        raise argparse.ArgumentTypeError(f"expected A:B with 0 <= A < B, or A: (to the end); got {text!r}")
    return first, last


def _pair(kind):
    def parse(text: str):
        try:
            first, second = (kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected two comma-separated values, e.g. 64,32; got {text!r}") from None
        return first, second

    return parse


def _mine(args: argparse.Namespace) -> int:
    mining = dict(
        num_negatives=args.num_negatives, strategy=args.strategy, rank_range=args.rank_range,
        margin=args.margin, relative_margin=args.relative_margin, max_score=args.max_score,
        min_score=args.min_score, temperature=args.temperature, seed=args.seed, metric=args.metric,
        backend=args.backend, precision=args.precision,
    )
    job = offline.Job(
        queries=args.queries, candidates=args.candidates, out=args.out, mining=mining,
        positives=args.positives, query_groups=args.query_groups, candidate_groups=args.candidate_groups,
        exclude_keys=args.exclude_keys, column=args.column, id_column=args.id_column, query_ids=args.query_ids,
        candidate_ids=args.candidate_ids, clusters=args.clusters, cluster_thresholds=args.cluster_thresholds,
        memory_limit=args.memory_limit, block_rows=args.block_rows,
        threads=args.threads,
        resume=args.resume, overwrite=args.overwrite, quiet=args.quiet, blocks=args.blocks,
    )
    try:
        executor = None
        scale = {"--cpus-per-task": args.cpus_per_task, "--gpus-per-task": args.gpus_per_task,
                 "--max-retries": args.max_retries}
        if args.ray is None and any(value is not None for value in scale.values()):
            raise offline.JobError(f"{', '.join(k for k, v in scale.items() if v is not None)} applies to --ray runs")
        if args.ray is not None:
            if args.blocks is not None:
                raise offline.JobError("--blocks and --ray exclude each other: --ray mines every block of the plan")
            from ..distributed import RayExecutor

            defaults = {"--cpus-per-task": 1, "--gpus-per-task": 0, "--max-retries": 3}
            executor = RayExecutor(args.ray, *(defaults[k] if v is None else v for k, v in scale.items()))
        return offline.run(job, executor)
    except offline.JobError as error:
        print(f"hardmine mine: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. disk full: parts written so far stay valid for --resume
        print(f"hardmine mine: error: {error}", file=sys.stderr)
        return 1


def _merge(args: argparse.Namespace) -> int:
    try:
        return offline.merge(args.out, overwrite=args.overwrite, quiet=args.quiet)
    except offline.JobError as error:
        print(f"hardmine merge: error: {error}", file=sys.stderr)
        return 2


def add_commands(commands) -> None:
    """The ``hardmine mine`` and ``hardmine merge`` subcommands and their options."""
    mine = commands.add_parser(
        "mine", help="mine negatives from embedding dumps (resumable, memory-bounded)",
        description="Output columns: query_id, negative_ids (list), negative_scores (list), positive_score "
                    "(NaN without positives), num_valid. See docs/offline.md.",
    )
    inputs = (".npy (fp32/fp16, memory-mapped) or Parquet/Arrow file, or a directory of such shards (sorted by name); "
              "or a URI (s3://, gs://, file://: copied once per machine into $HARDMINE_CACHE)")
    mine.add_argument("--queries", required=True, help=inputs)
    mine.add_argument("--candidates", required=True, help=inputs)
    mine.add_argument("--column", help="Parquet/Arrow inputs: the embedding column (a list of floats per row)")
    mine.add_argument("--id-column", help="Parquet/Arrow inputs: the column of row ids written to the output")
    mine.add_argument("--query-ids", help=".npy (Q,) integer or string ids written as query_id (default: row numbers)")
    mine.add_argument("--candidate-ids", help=".npy (C,) integer or string ids written as negative_ids")
    mine.add_argument("--positives", help=".npy ids (Q,) or (Q, m), or .npz CSR with indptr/indices")
    mine.add_argument("--query-groups", help=".npy (Q,) group labels")
    mine.add_argument("--candidate-groups", help=".npy (C,) group labels")
    mine.add_argument("--exclude-keys", help=".npy (C,) keys (e.g. text hashes): no shared key with a positive")
    mine.add_argument("--num-negatives", type=int, default=5)
    mine.add_argument("--strategy", default="top", choices=["top", "random", "semihard", "softmax", "cluster"])
    mine.add_argument("--clusters", type=_pair(int), default=(64, 64), metavar="KQ,KC",
                      help="--strategy cluster: k-means clusters of the queries and of the candidates (default 64,64)")
    mine.add_argument("--cluster-thresholds", type=_pair(float), metavar="TQ,TC",
                      help="--strategy cluster: centroid cosines at or above which clusters count as similar")
    mine.add_argument("--rank-range", type=_rank_range, default=(0, None), metavar="A:B")
    mine.add_argument("--margin", type=float)
    mine.add_argument("--relative-margin", type=float)
    mine.add_argument("--max-score", type=float)
    mine.add_argument("--min-score", type=float)
    mine.add_argument("--temperature", type=float)
    mine.add_argument("--seed", type=int, default=0)
    mine.add_argument("--metric", default="dot", choices=["dot", "cosine"])
    mine.add_argument("--backend", default="auto")
    mine.add_argument("--precision", default="fp32", choices=["fp32", "int8", "bf16", "auto"],
                      help="int8 / bf16: certified low-precision screening, exact re-scoring, the same negatives "
                           "(docs/precision.md)")
    mine.add_argument("--threads", type=int)
    mine.add_argument("--memory-limit", help="working-memory bound, e.g. 4GB; sets the query block size")
    mine.add_argument("--block-rows", type=int, help="query rows per block (overrides the --memory-limit choice)")
    mine.add_argument("--out", required=True, help="output .parquet, .npz or .jsonl: a path, or a URI (s3://, ...)")
    mine.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command")
    mine.add_argument("--overwrite", action="store_true", help="replace an existing --out or unfinished run")
    mine.add_argument("--quiet", action="store_true", help="no progress output")
    mine.add_argument("--blocks", type=_blocks, metavar="A:B",
                      help="mine only blocks A..B-1 of the plan (array jobs; needs --block-rows); then hardmine merge")
    scale = mine.add_argument_group("scale-out on Ray (pip install \"hardmine[ray]\"; docs/scale-out.md)")
    scale.add_argument("--ray", metavar="auto|local[:N]|HOST:PORT",
                       help="run the blocks as Ray tasks: the cluster of this machine, a local one of N CPUs, "
                            "or the head node at HOST:PORT")
    scale.add_argument("--cpus-per-task", type=int, metavar="N", help="CPUs (engine threads) per block task (default 1)")
    scale.add_argument("--gpus-per-task", type=float, metavar="G", help="GPUs per block task (with --backend cuda; default 0)")
    scale.add_argument("--max-retries", type=int, metavar="R",
                       help="times a block is retried when its worker or node is lost (default 3)")
    mine.set_defaults(run=_mine)
    merge = commands.add_parser("merge", help="merge the parts of a `hardmine mine --blocks` run into OUT")
    merge.add_argument("out", help="the --out the blocks were mined for")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    merge.add_argument("--quiet", action="store_true", help="no messages")
    merge.set_defaults(run=_merge)
