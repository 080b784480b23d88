#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run of a few minutes: the CUDA tests (CPU/CUDA
# parity of maps, collection, patch flipping and sanity checks; TF32 flags restored) and the
# benchmarks on the GPU (solver time to the reference's objective, per-iteration cost against
# the matrix products and host synchronisations per iteration, attribution and collection).
#
#   benchmarks/gpu_checks.sh prepare   here, with network access to PyPI: download the wheels
#                                      a bare GPU image lacks into .whl/ (git-ignored)
#   benchmarks/gpu_checks.sh run       on the GPU machine, from the repository root: install
#                                      .whl/ beside its torch and run everything; logs go to
#                                      $OUT (default gpu-out/)
#
# The wheels are for CPython 3.12 on x86-64 Linux; their versions are the pinned ones of
# requirements/constraints.txt. Each step has its own time limit, so one slow step cannot
# take the others' time; the limits add up to 9 minutes (run it with timeout_s 600).
set -u -o pipefail
cd "$(dirname "$0")/.."

WHEELS=(zennit captum librosa soundfile soxr pooch audioread decorator cffi pycparser platformdirs)

prepare() {
  local pins=()
  for name in "${WHEELS[@]}"; do
    pins+=("$(grep -i "^${name}==" requirements/constraints.txt)") || {
      echo "no pin for $name in requirements/constraints.txt" >&2
      return 1
    }
  done
  rm -rf .whl && mkdir -p .whl
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d .whl "${pins[@]}"
  ls .whl
}

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local status=$?
  echo "=== $name: exit $status after $((SECONDS - start)) s"
}

run() {
  OUT=${OUT:-gpu-out}
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.log"
  python3 -c "import torch, zennit; print('torch', torch.__version__, 'zennit', zennit.__version__)"
  step tests 150 python3 -m pytest -q -p no:cacheprovider -k cuda \
    tests/test_precision.py tests/test_patch_flipping.py tests/test_sanity.py
  step solver 240 python3 benchmarks/bench_drsa_solver.py --device cuda --threads 8 \
    --dims 128 512
  step attribution 90 python3 benchmarks/bench_attribution.py --device cuda --threads 8 \
    --batch 64
  step collect 60 python3 benchmarks/bench_collect.py --device cuda --threads 8
}

case ${1:-} in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
