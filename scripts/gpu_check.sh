#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and a CUDA build of PyTorch:
#   1. configures against the CUDA LibTorch of that PyTorch (torch.utils.cmake_prefix_path),
#   2. builds m2n2, the LibTorch backend, the tests and (if Google Benchmark is there) the benchmarks,
#   3. runs the CUDA tests (parity on CUDA in fp32, fp16 and bf16),
#   4. runs the grid-128 benchmark on CUDA (operator, Markov step, Markov-map, click),
#   5. exports a tiny Stable Diffusion (the pinned diffusers classes, random weights) with
#      --device cuda and --device cuda --fp16, and segments with each archive on CUDA and on the CPU,
# and writes one report. About 5-8 minutes on one H100 with 16 cores.
#
#   scripts/gpu_check.sh --prepare [SHARED_DIR]   on a machine with the pinned sources (default
#                                                 ../shared): copies diffusers and huggingface_hub
#                                                 into .gpu/vendor (ignored by git; it travels
#                                                 with the checkout where ../shared does not)
#   scripts/gpu_check.sh [REPORT]                 the check (default REPORT: $OUT/gpu_check.txt
#                                                 when $OUT is set, else build-gpu/gpu_check.txt)
#
# Environment: PYTHON (default python3, the one with the CUDA PyTorch), BUILD_DIR (default
# build-gpu), JOBS (default nproc). Exit 0 when every step passed, 1 when one failed, 2 on a
# usage error or when the machine cannot run the check at all (no GPU, no CUDA PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
vendor_dir=$root/.gpu/vendor
diffusers=diffusers-0.31.0
hub=huggingface_hub-0.36.2

die() { echo "gpu_check: $*" >&2; exit 2; }

if [ "${1:-}" = "--prepare" ]; then
  shared=${2:-$root/../shared}
  for d in "$diffusers/src" "$hub/src"; do
    [ -d "$shared/vendor/$d" ] || die "--prepare: $shared/vendor/$d is missing"
  done
  rm -rf "$vendor_dir"
  mkdir -p "$vendor_dir/$diffusers" "$vendor_dir/$hub"
  cp -r "$shared/vendor/$diffusers/src" "$vendor_dir/$diffusers/"
  cp -r "$shared/vendor/$hub/src" "$vendor_dir/$hub/"
  find "$vendor_dir" -name __pycache__ -prune -exec rm -rf {} +
  echo "gpu_check: pinned diffusers copied to .gpu/vendor ($(du -sh "$vendor_dir" | cut -f1))"
  exit 0
fi
[ $# -le 1 ] || die "usage: scripts/gpu_check.sh [--prepare [SHARED_DIR] | REPORT]"

python=${PYTHON:-python3}
build=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-$(nproc)}
if [ -n "${1:-}" ]; then report=$1
elif [ -n "${OUT:-}" ]; then report=$OUT/gpu_check.txt
else report=$build/gpu_check.txt
fi
mkdir -p "$build" "$(dirname "$report")"
report=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
logs=$build/gpu_check_logs
mkdir -p "$logs"
: > "$report"
failed=0
start=$SECONDS

say() { echo "$*" | tee -a "$report"; }
# step NAME LOG COMMAND...: runs the command with its output in LOG, records PASS/FAIL with the
# time taken and, on failure, the log's last lines; later steps go on.
step() {
  local name=$1 log=$logs/$2; shift 2
  local t0=$SECONDS
  if "$@" > "$log" 2>&1; then
    say "PASS  $name ($((SECONDS - t0)) s)"
  else
    say "FAIL  $name ($((SECONDS - t0)) s, exit $?): last lines of $log:"
    tail -n 15 "$log" | sed 's/^/      /' | tee -a "$report"
    failed=1
  fi
}

say "# m2n2 GPU check, commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
command -v nvidia-smi > /dev/null || die "nvidia-smi not found: this is no NVIDIA GPU machine"
say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
say "cpu: $(nproc) cores; compiler: $(${CXX:-c++} --version | head -1)"
torch_info=$("$python" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available()); print(torch.utils.cmake_prefix_path)' 2>&1) ||
  die "$python cannot import torch: $torch_info"
read -r torch_version torch_cuda cuda_ok <<< "$(echo "$torch_info" | head -1)"
prefix=$(echo "$torch_info" | tail -1)
say "torch: $torch_version, CUDA $torch_cuda, device visible: $cuda_ok; LibTorch from $prefix"
[ "$torch_cuda" != None ] || die "$python's torch $torch_version is a CPU-only build"
[ "$cuda_ok" = True ] || die "torch sees no CUDA device"

# 1-2. Configure and build (benchmarks only where Google Benchmark is installed).
gen=()
command -v ninja > /dev/null && gen=(-G Ninja)
configure() {
  cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DM2N2_BUILD_EXAMPLES=OFF "$@"
}
bench=ON
if ! configure -DM2N2_BUILD_BENCH=ON > "$logs/configure.log" 2>&1; then
  bench=OFF
  step "configure against the CUDA LibTorch (no Google Benchmark)" configure.log configure -DM2N2_BUILD_BENCH=OFF
else
  say "PASS  configure against the CUDA LibTorch"
fi
grep -q "M2N2_TORCH_HAS_CUDA=1" "$build/build.ninja" "$build/CMakeFiles"/*/flags.make 2> /dev/null ||
  say "note  the configured LibTorch has no CUDA target (M2N2_TORCH_HAS_CUDA=0)"
targets=(m2n2 m2n2_torch m2n2_tests)
[ "$bench" = ON ] && targets+=(m2n2_bench)
step "build ${targets[*]}" build.log cmake --build "$build" -j "$jobs" --target "${targets[@]}"
[ -x "$build/m2n2" ] || { say "FAIL  nothing to run without a build"; exit 1; }
say "$("$build/m2n2" --version | sed 's/^/      /')"

# 3. The CUDA tests: parity of the operator on CUDA, fp32 and reduced precision.
step "CUDA tests (*OnCuda*)" cuda_tests.log "$build/tests/m2n2_tests" --gtest_filter='*OnCuda*' --gtest_brief=0
grep -E "^\[  (PASSED|FAILED|SKIPPED) |max |IoU" "$logs/cuda_tests.log" | head -20 | sed 's/^/      /' >> "$report" || true
if grep -q "SKIPPED" "$logs/cuda_tests.log"; then say "FAIL  CUDA tests were skipped (no device seen by LibTorch)"; failed=1; fi

# 4. Grid 128 on CUDA: fp32, fp16, bf16 (placements 1, 2, 3).
if [ "$bench" = ON ]; then
  step "grid-128 benchmark on CUDA" bench128.log "$build/tests/m2n2_bench" --benchmark_filter='On/[123]/128' \
    --benchmark_repetitions=3 --benchmark_report_aggregates_only=true --benchmark_min_time=0.2
  grep "_median" "$logs/bench128.log" | sed 's/^/      /' >> "$report" || true
else
  say "SKIP  grid-128 benchmark: Google Benchmark is not installed"
fi

# 5. Stable Diffusion export on CUDA with the pinned diffusers, then m2n2 reads it on both devices.
export_sd() {  # export_sd OUT [--fp16]
  PYTHONPATH="$vendor_dir/$diffusers/src:$vendor_dir/$hub/src:$root/tests/py_stubs:$root/tests/py:$root/scripts" \
  "$python" - "$@" << 'PY'
import sys
import export_sd_attention as export_sd
import tiny_sd
out, extra = sys.argv[1], sys.argv[2:]
def load(model, dtype):  # a stand-in pipeline of the real diffusers classes, random weights
    pipe = tiny_sd.StandInPipeline("sd2")
    pipe.unet.to(dtype)
    pipe.vae.to(dtype)
    pipe._embedding = pipe._embedding.to(dtype)
    return pipe
export_sd.main(["--model", "tiny/sd2", "--out", out, "--resolution", "16", "--device", "cuda"] + extra, load=load)
print("exported", out)
PY
}
segment_both() {  # segment_both ARCHIVE NAME: masks on CUDA and on the CPU, compared
  local img=$root/examples/images/fruit.png
  for dev in cuda cpu; do
    "$build/m2n2" segment --image "$img" --click 120,172,+ --source "torchscript:$1" --device "$dev" \
      --no-cache --out "$build/gpu_check_$2_$dev.png" -q
  done
  "$python" - "$build/gpu_check_$2_cuda.png" "$build/gpu_check_$2_cpu.png" << 'PY'
import sys
import numpy as np
try:
    from PIL import Image
    read = lambda p: np.asarray(Image.open(p))
except ImportError:
    import cv2
    read = lambda p: cv2.imread(p, cv2.IMREAD_GRAYSCALE)
a, b = (read(p) > 127 for p in sys.argv[1:3])
iou = (a & b).sum() / max(1, (a | b).sum())
print("mask IoU cuda vs cpu: %.6f (%d vs %d pixels)" % (iou, a.sum(), b.sum()))
sys.exit(0 if iou >= 0.99 else 1)
PY
}
if [ -d "$vendor_dir/$diffusers/src" ] && [ -d "$vendor_dir/$hub/src" ]; then
  step "SD export --device cuda (fp32)" export.log export_sd "$build/gpu_check_sd.pt"
  step "SD export --device cuda --fp16" export16.log export_sd "$build/gpu_check_sd16.pt" --fp16
  [ -s "$build/gpu_check_sd.pt" ] && step "m2n2 on the fp32 archive, CUDA against CPU" seg.log segment_both "$build/gpu_check_sd.pt" sd
  [ -s "$build/gpu_check_sd16.pt" ] && step "m2n2 on the fp16 archive, CUDA against CPU" seg16.log segment_both "$build/gpu_check_sd16.pt" sd16
  grep -h "IoU" "$logs/seg.log" "$logs/seg16.log" 2> /dev/null | sed 's/^/      /' >> "$report" || true
else
  say "FAIL  SD export: .gpu/vendor is missing (run scripts/gpu_check.sh --prepare where ../shared is)"
  failed=1
fi

say "# $( [ $failed = 0 ] && echo "all steps passed" || echo "some steps FAILED"), $((SECONDS - start)) s; logs in $logs"
exit $failed
