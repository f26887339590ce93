"""GPU top-k beside its floors and peers, in one process on one device (run by gpu_check.sh).

    python benches/bench_gpu.py --json benches/results/gpu.json [--queries 8192 --candidates 262144 --dim 384]

Times (CUDA events, median of 5 after a warm-up): the bare GEMM of the same shape in CuPy (fp32
and fp16; the floor), torch ``mm + topk`` on device tensors (the usual way), and hardmine's
``cupy`` and ``cuda`` backends on the same device arrays (read in place) and on host arrays
(uploaded once); and ``mine`` in a training step: a B=4096 batch of torch CUDA tensors against
a bank of device tensors, beside torch's own masked ``mm + topk``. Integer-valued embeddings make
scores exact, so the scores are checked against torch's.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def timed(function, repeats: int = 5) -> float:
    import cupy

    function()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        function()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1000)
    return float(np.median(times))


def training_step(rng, dim: int, batch: int = 4096, bank: int = 65536, negatives: int = 8) -> list[dict]:
    """``mine`` on device tensors as a training loop calls it: the batch's captions are the
    positives (row i of the bank), torch tensors in, index tensors out on the device."""
    import torch

    import hardmine

    anchors = torch.as_tensor(rng.integers(-8, 9, (batch, dim)).astype(np.float32), device="cuda")
    memory = torch.as_tensor(rng.integers(-8, 9, (bank, dim)).astype(np.float32), device="cuda")
    positives = torch.arange(batch, device="cuda")

    def torch_way():
        scores = anchors @ memory.T
        scores[positives, positives] = -float("inf")
        return torch.topk(scores, negatives, dim=1)

    ours = hardmine.mine(anchors, memory, positives=positives, num_negatives=negatives)
    same = bool(torch.equal(ours.scores, torch_way().values))
    rows = [{"name": f"torch masked mm+topk, training step B={batch} x {bank}", "seconds": timed(torch_way)}]
    for dtype in (torch.float32, torch.float16):
        a, m = anchors.to(dtype), memory.to(dtype)
        rows.append({"name": f"hardmine mine, training step B={batch} x {bank} {dtype}", "scores_match": same,
                     "seconds": timed(lambda: hardmine.mine(a, m, positives=positives, num_negatives=negatives))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=8192)
    parser.add_argument("--candidates", type=int, default=262144)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1024])
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    import cupy
    import torch

    import hardmine
    from hardmine import backends

    rng = np.random.default_rng(0)
    queries = rng.integers(-8, 9, (args.queries, args.dim)).astype(np.float32)
    candidates = rng.integers(-8, 9, (args.candidates, args.dim)).astype(np.float32)
    q_dev, c_dev = cupy.asarray(queries), cupy.asarray(candidates)
    q_half, c_half = q_dev.astype(cupy.float16), c_dev.astype(cupy.float16)
    tq, tc = torch.as_tensor(queries, device="cuda"), torch.as_tensor(candidates, device="cuda")
    results = {"shape": vars(args), "device": torch.cuda.get_device_name(), "started": time.ctime(), "rows": []}
    results["rows"].append({"name": "cupy GEMM fp32 (floor)", "seconds": timed(lambda: q_dev @ c_dev.T)})
    results["rows"].append({"name": "cupy GEMM fp16 (floor)", "seconds": timed(lambda: q_half @ c_half.T)})
    for k in args.k:
        expected = torch.topk(tq @ tc.T, k, dim=1).values.cpu().numpy()
        results["rows"].append({"name": f"torch mm+topk k={k}",
                                "seconds": timed(lambda: torch.topk(tq @ tc.T, k, dim=1))})
        for backend in ("cupy", "cuda"):
            if backends.status()[backend] is not None:
                results["rows"].append({"name": f"hardmine {backend} k={k}", "skipped": backends.status()[backend]})
                continue
            for where, q, c in (("device", q_dev, c_dev), ("host", queries, candidates)):
                found = hardmine.topk(q, c, k, backend=backend)
                same = bool(np.array_equal(cupy.asnumpy(cupy.asarray(found.scores)), expected))
                seconds = timed(lambda: hardmine.topk(q, c, k, backend=backend), repeats=3)
                results["rows"].append({"name": f"hardmine {backend} k={k} {where} inputs", "seconds": seconds,
                                        "scores_match": same})
    results["rows"] += training_step(rng, args.dim)
    for row in results["rows"]:
        print(row)
    with open(args.json, "w") as out:
        json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
