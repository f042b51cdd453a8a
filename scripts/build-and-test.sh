#!/bin/bash
# Builds m2n2 and runs every test: the Release build (unit, parity and CLI tests),
# then the whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"
# The package: install into a temporary prefix, a separate project finds it and runs.
scripts/check_package.sh build
# Without LibTorch (-DM2N2_WITH_TORCH=OFF): the executable and the library example only,
# and their end-to-end tests.
cmake -S . -B build-notorch -G Ninja -DCMAKE_BUILD_TYPE=Release -DM2N2_WITH_TORCH=OFF -DM2N2_BUILD_BENCH=OFF > /dev/null
cmake --build build-notorch -j "$jobs" --target m2n2 m2n2_example
ctest --test-dir build-notorch --output-on-failure -j "$jobs"
if [ "${M2N2_SKIP_SANITIZERS:-0}" != 1 ]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DM2N2_SANITIZE=ON -DM2N2_BUILD_BENCH=OFF -DM2N2_BUILD_PYTHON=OFF > /dev/null
  cmake --build build-asan -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:suppressions=$PWD/tests/sanitizers/asan.supp \
  LSAN_OPTIONS=suppressions=$PWD/tests/sanitizers/lsan.supp \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$PWD/tests/sanitizers/ubsan.supp \
    ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE slow
fi
