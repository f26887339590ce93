"""Exact top-k past the fp32 limit: hardmine's certified int8 and bf16 paths beside its fp32 engine,
NumPy's sgemm (the fp32 floor), faiss.knn and torch's bf16 matmul + topk, in one process.

    HARDMINE_BENCH_SIZE=full python -m pytest benches/bench_precision.py \
        --benchmark-json benches/results/precision_full.json

Shapes: Q x C x d from benches/conftest.py (full: 8192 x 262144, d = 384 and 768; ci: 1024 x
32768 x 384), k = 10 and 100, uniform and clustered rows. int8 and bf16 return the exact answer (checked
here against the fp32 engine on every row, ties and near-ties within SPEC 6's tolerance); its
shortlist sizes (candidates re-scored per query) go into the JSON's extra_info. Then
`violations`, open `random` draws (ranks 0: and 10:) and open `softmax` draws in fp32, int8
and bf16 on paired data (each query near its positive), the certified answers checked against
fp32's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import hardmine
from hardmine import _validation, backends

from conftest import NUMPY_BLOCK, SIZE, flops, numpy_sgemm, run, skip_unless_native  # noqa: E402  (benches/ is on sys.path)

KS = (10, 100)
DATA = ("uniform", "clustered")


def dims(size) -> tuple[int, ...]:
    return (size["dim"], 2 * size["dim"]) if size["queries"] >= 8192 else (size["dim"],)


@pytest.fixture(scope="module")
def inputs(size):
    cache = {}

    def make(kind: str, dim: int):
        if (kind, dim) not in cache:
            rng = np.random.default_rng(dim)
            shape_q, shape_c = (size["queries"], dim), (size["candidates"], dim)
            if kind == "uniform":
                queries = rng.standard_normal(shape_q, dtype=np.float32)
                candidates = rng.standard_normal(shape_c, dtype=np.float32)
            else:  # 1000 topics, rows near their centre: dense near-ties among the top candidates
                centres = rng.standard_normal((1000, dim), dtype=np.float32)
                queries = centres[rng.integers(0, 1000, shape_q[0])] + 0.3 * rng.standard_normal(shape_q, np.float32)
                candidates = centres[rng.integers(0, 1000, shape_c[0])] + 0.3 * rng.standard_normal(shape_c,
                                                                                                     np.float32)
            cache[(kind, dim)] = (queries, candidates)
        return cache[(kind, dim)]

    return make


@pytest.fixture(autouse=True)
def _native_kernels_only(request):
    """Certified timings need the native kernels (conftest.skip_unless_native)."""
    codes = getattr(request.node, "callspec", None) and request.node.callspec.params.get("precision")
    if codes in ("int8", "bf16"):
        skip_unless_native(codes)


def pytest_generate_tests(metafunc):
    if "dim" in metafunc.fixturenames:
        metafunc.parametrize("dim", dims(SIZE))


def test_sgemm(benchmark, inputs, record, dim):
    queries, candidates = inputs("uniform", dim)
    run(benchmark, lambda: numpy_sgemm(queries, candidates))
    record(f"d={dim}", "numpy sgemm (same shape)", benchmark, flops(queries, candidates))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kind", DATA)
@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_hardmine(benchmark, inputs, record, dim, kind, k, precision):
    if backends.status()["cpu"] is not None:
        pytest.skip(f"compiled core absent: {backends.status()['cpu']}")
    queries, candidates = inputs(kind, dim)
    result = run(benchmark, lambda: hardmine.topk(queries, candidates, k, metric="cosine", precision=precision))
    record(f"{kind} d={dim} k={k}", f"hardmine {precision}", benchmark, flops(queries, candidates))
    if precision != "fp32":
        problem = _validation.problem(queries, candidates, metric_name="cosine")
        shortlist = backends.get("cpu").topk_certified(replace(problem, precision=precision), k)[3]
        kept = shortlist[shortlist >= 0]
        benchmark.extra_info.update(shortlist_mean=float(kept.mean()), shortlist_p99=float(np.percentile(kept, 99)),
                                    shortlist_max=int(kept.max()), fell_back=int((shortlist < 0).sum()))
        exact = hardmine.topk(queries, candidates, k, metric="cosine", precision="fp32")
        same = (result.indices == exact.indices).all(axis=1)
        # rows that differ may only swap candidates whose fp32 scores tie within float32 rounding
        np.testing.assert_allclose(result.scores[~same], exact.scores[~same], rtol=0, atol=1e-5)
        benchmark.extra_info["rows_identical_to_fp32"] = float(same.mean())


@pytest.mark.parametrize("k", KS)
def test_faiss_knn(benchmark, inputs, record, dim, k):
    faiss = pytest.importorskip("faiss")
    queries, candidates = inputs("uniform", dim)
    normalised_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    normalised_c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    run(benchmark, lambda: faiss.knn(normalised_q, normalised_c, k, metric=faiss.METRIC_INNER_PRODUCT))
    record(f"uniform d={dim} k={k}", "faiss.knn (fp32)", benchmark, flops(queries, candidates))


@pytest.mark.parametrize("k", KS)
def test_torch_bf16(benchmark, inputs, record, dim, k):
    torch = pytest.importorskip("torch")
    queries, candidates = inputs("uniform", dim)
    q = torch.nn.functional.normalize(torch.from_numpy(queries), dim=1).to(torch.bfloat16)
    c = torch.nn.functional.normalize(torch.from_numpy(candidates), dim=1).to(torch.bfloat16)

    def bf16_topk():  # blocked like the NumPy peer; approximate (bf16 scores), the usual fast recipe
        best = None
        for start in range(0, c.shape[0], NUMPY_BLOCK):
            values, ids = torch.topk((q @ c[start : start + NUMPY_BLOCK].T).float(), k, dim=1)
            ids = ids + start
            if best is not None:
                values, order = torch.topk(torch.cat([best[0], values], 1), k, dim=1)
                ids = torch.gather(torch.cat([best[1], ids], 1), 1, order)
            best = (values, ids)
        return best

    run(benchmark, bf16_topk)
    record(f"uniform d={dim} k={k}", "torch bf16 mm+topk (approx.)", benchmark, flops(queries, candidates))


@pytest.fixture(scope="module")
def paired(size):
    """Candidates on the unit sphere and each query near its positive (candidate q), as after
    training: the case violations and draws serve (few violators, most candidates admissible)."""
    rng = np.random.default_rng(7)
    candidates = rng.standard_normal((size["candidates"], size["dim"]), dtype=np.float32)
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    noise = rng.standard_normal((size["queries"], size["dim"]), dtype=np.float32) / np.float32(np.sqrt(size["dim"]))
    return candidates[: size["queries"]] + np.float32(0.7) * noise, candidates, np.arange(size["queries"])


@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_violations(benchmark, paired, record, precision):
    if backends.status()["cpu"] is not None:
        pytest.skip(f"compiled core absent: {backends.status()['cpu']}")
    queries, candidates, positives = paired
    result = run(benchmark, lambda: hardmine.violations(queries, candidates, positives=positives, margin=0.2,
                                                        metric="cosine", precision=precision))
    record("violations, margin 0.2", f"hardmine {precision}", benchmark, flops(queries, candidates))
    if precision != "fp32":
        exact = hardmine.violations(queries, candidates, positives=positives, margin=0.2, metric="cosine")
        np.testing.assert_array_equal(result.count, exact.count)
        np.testing.assert_allclose(result.max, exact.max, atol=1e-5)


@pytest.mark.parametrize("first", [0, 10])
@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_open_random_draw(benchmark, paired, record, first, precision):
    if backends.status()["cpu"] is not None:
        pytest.skip(f"compiled core absent: {backends.status()['cpu']}")
    queries, candidates, positives = paired
    options = dict(positives=positives, strategy="random", num_negatives=10, rank_range=(first, None),
                   metric="cosine")
    result = run(benchmark, lambda: hardmine.mine(queries, candidates, precision=precision, **options))
    record(f"mine random, ranks {first}:", f"hardmine {precision}", benchmark, flops(queries, candidates))
    if precision != "fp32":
        exact = hardmine.mine(queries, candidates, **options)
        same = (result.indices == exact.indices).all(axis=1)
        benchmark.extra_info["rows_identical_to_fp32"] = float(same.mean())
        assert same.mean() > 0.999  # the same seeded draws; only a float32-rounding tie may differ


@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_open_softmax_draw(benchmark, paired, record, precision):
    if backends.status()["cpu"] is not None:
        pytest.skip(f"compiled core absent: {backends.status()['cpu']}")
    queries, candidates, positives = paired
    options = dict(positives=positives, strategy="softmax", temperature=0.05, num_negatives=10,
                   rank_range=(0, None), metric="cosine")
    result = run(benchmark, lambda: hardmine.mine(queries, candidates, precision=precision, **options))
    record("mine softmax T=0.05, ranks 0:", f"hardmine {precision}", benchmark, flops(queries, candidates))
    if precision != "fp32":
        exact = hardmine.mine(queries, candidates, **options)
        same = (result.indices == exact.indices).all(axis=1)
        benchmark.extra_info["rows_identical_to_fp32"] = float(same.mean())
        assert same.mean() > 0.999  # the same seeded draws; only a float32-rounding tie may differ
