#!/bin/bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 600),
# all six at once, starting from the seed corpus in tests/fuzz/corpus/<target>.
# Crashes land in build-fuzz/findings/<target>/; keep each as a regression case in
# tests/fuzz/regressions/<target>/ (tests/cli/test_fuzz_regressions.sh replays them).
#   scripts/fuzz.sh 600
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DM2N2_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build-fuzz
export OPENCV_IO_MAX_IMAGE_PIXELS=4194304
run() {
  local t=$1 work=build-fuzz/corpus/$1
  mkdir -p "$work" build-fuzz/findings/$t
  cp -n tests/fuzz/corpus/$t/* "$work"/ 2> /dev/null || true
  build-fuzz/$t "$work" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -artifact_prefix=build-fuzz/findings/$t/ -print_final_stats=1 > build-fuzz/$t.log 2>&1 || true
  echo "$t: $(grep -E 'stat::number_of_executed_units' build-fuzz/$t.log | awk '{print $2}') executions," \
       "$(ls build-fuzz/findings/$t | wc -l) findings"
}
run fuzz_click_json & run fuzz_npy & run fuzz_coco & run fuzz_mask & run fuzz_image & run fuzz_settings & wait
