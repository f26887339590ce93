"""GPU top-k beside its floors and peers, in one process on one device (run by gpu_check.sh).

    python benches/bench_gpu.py --json benches/results/gpu.json [--queries 8192 --candidates 262144 --dim 384]

Times (CUDA events, median of 5 after a warm-up): the bare GEMM of the same shape in CuPy (fp32
and fp16; the floor), torch ``mm + topk`` on device tensors (the usual way), and hardmine's
``cupy`` and ``cuda`` backends. hardmine reads host arrays (device-array inputs are not wired
yet), so its times include copying every candidate tile to the device once per query block.
Integer-valued embeddings make scores exact, so the indices are checked against torch's.
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
            found = hardmine.topk(queries, candidates, k, backend=backend)
            same = bool(np.array_equal(np.asarray(found.scores), expected))
            seconds = timed(lambda: hardmine.topk(queries, candidates, k, backend=backend), repeats=3)
            results["rows"].append({"name": f"hardmine {backend} k={k}", "seconds": seconds, "scores_match": same})
    for row in results["rows"]:
        print(row)
    with open(args.json, "w") as out:
        json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
