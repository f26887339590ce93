#!/usr/bin/env bash
# The GPU check (issue 13): one command on a machine with a GPU, < 10 minutes, no network.
#   1. installs hardmine from this checkout with the machine's own CUDA, CuPy, numba-cuda and
#      torch (--no-build-isolation; scipy-openblas32 comes from .whl/ when the image lacks it,
#      see /work/.library/device/README.md for carrying wheels)
#   2. runs the GPU backends' tests on the device (HARDMINE_GPU_TESTS=1: no simulator)
#   3. runs compute-sanitizer memcheck and racecheck on a small GPU test (allowed to fail
#      where the sanitizer refuses the device, as it does under gVisor)
#   4. runs benches/bench_gpu.py
# Logs and the bench JSON go to $OUT (the device tool's output folder) or benches/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benches/results}
mkdir -p "$out"
py=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$py -m pip install -q --no-build-isolation --no-deps --no-index . 2>&1 | tee "$out/gpu_install.log" | tail -3
export HARDMINE_GPU_TESTS=1 PYTHONUNBUFFERED=1
(cd /tmp && $py -c "import hardmine; hardmine.info()") 2>&1 | tee "$out/gpu_info.log"
status=0
$py -m pytest -q -p no:cacheprovider tests/test_cupy_backend.py tests/test_device_inputs.py tests/test_build.py 2>&1 \
  | tee "$out/gpu_tests.log" | tail -5 || status=1
for tool in memcheck racecheck; do
  timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 \
    $py -m pytest -q -p no:cacheprovider tests/test_cupy_backend.py -k "topk_with_ties and 4" 2>&1 \
    | tail -20 >"$out/gpu_sanitizer_$tool.log" || echo "compute-sanitizer $tool: see $out/gpu_sanitizer_$tool.log"
done
$py benches/bench_gpu.py --json "$out/gpu.json" 2>&1 | tee "$out/gpu_bench.log" | tail -20 || status=1
exit $status
