#!/usr/bin/env bash
# The library example (examples/segment_one.cpp) segments a shipped example from one
# click, and its mask is the one `m2n2 segment` writes for the same click.
set -euo pipefail
example=$1 m2n2=$2 root=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
img=$root/examples/images/fruit.png
"$example" "$img" 120 172 "$tmp/lib.png" > "$tmp/out.txt" 2> "$tmp/err.txt"
grep -q "pixels in the mask" "$tmp/out.txt"
grep -q "^ready 100%" "$tmp/err.txt"   # progress reached the caller's callback
M2N2_CACHE_DIR=$tmp/cache "$m2n2" segment --image "$img" --click 120,172,+ --out "$tmp/cli.png" -q > /dev/null
cmp "$tmp/lib.png" "$tmp/cli.png"
area=$(sed -E 's/^([0-9]+) pixels.*/\1/' "$tmp/out.txt")
[ "$area" -gt 1000 ] || { echo "mask too small: $area"; exit 1; }
# A missing image: one line naming it, exit 1.
if "$example" "$tmp/none.png" 1 1 "$tmp/x.png" 2> "$tmp/err2.txt"; then echo "expected failure"; exit 1; fi
grep -q "none.png" "$tmp/err2.txt"
[ ! -e "$tmp/x.png" ]
echo "example ok: $area pixels, identical to m2n2 segment"
