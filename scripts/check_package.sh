#!/usr/bin/env bash
# The package as a user gets it: `cmake --install` of BUILD_DIR into a temporary prefix,
# then a separate project (tests/consumer) that finds it with find_package(m2n2), compiles
# examples/segment_one.cpp against m2n2::m2n2 and runs it on a shipped example, and the
# installed bin/m2n2 writes the same mask.
#
#   scripts/check_package.sh [BUILD_DIR]      (default build/; it must be built)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build}
[ -x "$build/m2n2" ] || { echo "check_package: $build/m2n2 is not built" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$build" --prefix "$prefix" > "$tmp/install.log" || { cat "$tmp/install.log" >&2; exit 1; }
for f in bin/m2n2 include/m2n2/m2n2.hpp include/m2n2/version.hpp lib/cmake/m2n2/m2n2Config.cmake \
         lib/cmake/m2n2/m2n2ConfigVersion.cmake lib/cmake/m2n2/m2n2Targets.cmake; do
  [ -e "$prefix/$f" ] || { echo "check_package: $f was not installed" >&2; exit 1; }
done
if [ -e "$build/libm2n2_torch.so" ] && [ ! -e "$prefix/lib/m2n2/libm2n2_torch.so" ]; then
  echo "check_package: the LibTorch backend was not installed to lib/m2n2" >&2; exit 1
fi

gen=()
command -v ninja > /dev/null && gen=(-G Ninja)
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S tests/consumer -B "$tmp/consumer" "${gen[@]}" "${launcher[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" > "$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log" >&2; exit 1; }
cmake --build "$tmp/consumer" > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }

img=$root/examples/images/fruit.png
"$tmp/consumer/segment_one" "$img" 120 172 "$tmp/lib.png" > "$tmp/out.txt" 2> /dev/null
grep -q "pixels in the mask" "$tmp/out.txt"
M2N2_CACHE_DIR=$tmp/cache "$prefix/bin/m2n2" segment --image "$img" --click 120,172,+ --out "$tmp/cli.png" -q > /dev/null
cmp "$tmp/lib.png" "$tmp/cli.png"
"$prefix/bin/m2n2" --version | head -1
echo "package ok: installed, found by find_package(m2n2), the consumer's mask equals bin/m2n2's"
