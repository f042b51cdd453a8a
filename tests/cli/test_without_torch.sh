#!/usr/bin/env bash
# A build configured with -DM2N2_WITH_TORCH=OFF: --version says so, segmenting from the
# embedded source and from a .npy works, and what needs LibTorch is refused with one
# line naming the option (--source torchscript: exit 2).
set -euo pipefail
m2n2=$1 root=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
export M2N2_CACHE_DIR=$tmp/cache

"$m2n2" --version > "$tmp/version.txt"
grep -q "^m2n2 [0-9]" "$tmp/version.txt" || fail "no version line"
grep -q "^LibTorch backend: no (built with -DM2N2_WITH_TORCH=OFF)" "$tmp/version.txt" || fail "version does not say LibTorch is left out"
grep -q "^CUDA backend: no" "$tmp/version.txt" || fail "version claims CUDA"

img=$root/examples/images/fruit.png
"$m2n2" segment --image "$img" --click 120,172,+ --out "$tmp/a.png" -q > /dev/null
[ -s "$tmp/a.png" ] || fail "no mask from the default source"
"$m2n2" attention --image "$img" --grid 16 --npy "$tmp/att.npy" > /dev/null 2>&1
"$m2n2" segment --image "$img" --click 120,172,+ --source "file:$tmp/att.npy" --out "$tmp/b.png" -q > /dev/null
[ -s "$tmp/b.png" ] || fail "no mask from a .npy source"

set +e
"$m2n2" segment --image "$img" --click 120,172,+ --source torchscript:"$root/models/tiny-sd2-attention.pt" \
  --out "$tmp/c.png" > "$tmp/out.txt" 2> "$tmp/err.txt"
rc=$?
set -e
[ "$rc" = 2 ] || fail "torchscript source: exit $rc, expected 2"
[ "$(wc -l < "$tmp/err.txt")" = 1 ] || { cat "$tmp/err.txt"; fail "torchscript source: not one line"; }
grep -q -- "-DM2N2_WITH_TORCH=OFF" "$tmp/err.txt" || fail "the message does not name the option"
[ ! -s "$tmp/out.txt" ] && [ ! -e "$tmp/c.png" ] || fail "output written"
echo "without LibTorch: version, default and .npy sources ok; torchscript refused (exit 2)"
