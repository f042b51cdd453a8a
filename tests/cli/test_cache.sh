#!/usr/bin/env bash
# m2n2 cache info | clear, and the --cache-max-size cap, end to end.
set -euo pipefail
M2N2=$1 ROOT=$2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
C=$TMP/cache
field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
for img in fruit kite; do
  "$M2N2" attention --image "$ROOT/examples/images/$img.png" --npy "$TMP/$img.npy" --grid 16 --cache-dir "$C" -q > /dev/null
done
[ "$("$M2N2" cache info --cache-dir "$C" | field entries)" = 2 ] || { echo "expected 2 entries"; exit 1; }
# A cap of one entry: the next image's write evicts both older ones, its own entry stays.
"$M2N2" attention --image "$ROOT/examples/images/fruit.png" --npy "$TMP/f.npy" --grid 24 --cache-dir "$C" --cache-max-size 800K -q > /dev/null
info=$("$M2N2" cache info --cache-dir "$C" --cache-max-size 800K)
[ "$(echo "$info" | field entries)" = 1 ] || { echo "cap not applied: $info"; exit 1; }
[ "$(echo "$info" | field max_bytes)" = 819200.0 ] || { echo "cap not reported: $info"; exit 1; }
# clear empties it and says how many files went.
out=$("$M2N2" cache clear --cache-dir "$C")
[ "$(echo "$out" | field entries)" = 0 ] && [ "$(echo "$out" | field removed_files)" -ge 2 ] || { echo "clear: $out"; exit 1; }
[ -z "$(ls -A "$C")" ]
# Usage errors: exit 2 with one line.
set +e
"$M2N2" cache info --cache-dir "$C" --cache-max-size lots 2> "$TMP/err"; rc=$?
set -e
[ $rc = 2 ] && grep -q "^m2n2: error: --cache-max-size: cannot parse 'lots'" "$TMP/err" || { echo "rc=$rc"; cat "$TMP/err"; exit 1; }
set +e
"$M2N2" cache > /dev/null 2>&1; rc=$?
set -e
[ $rc = 2 ] || { echo "cache without info|clear: rc=$rc"; exit 1; }
echo "cache ok"
