#!/usr/bin/env bash
# Issue 18's per-image targets, each figure printed beside its target (one run; the
# in-process stages are medians of 5, the whole process a median of 5 processes).
#
#   scripts/bench_targets.sh [BUILD_DIR] [GRABCUT_DIR]
#
# BUILD_DIR defaults to build/, GRABCUT_DIR to ../shared/datasets/GrabCut (the two
# GrabCut lines are skipped when it is missing). Fixtures go to a temporary folder:
# the shipped example resized to 854x480, and its grid-64 attention from the embedded
# source as a 64 MiB .npy. The GrabCut runs start from an empty attention cache.
# Reference figures (the authors' Python code on this machine kind): docs/performance.md.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build}"
grabcut="${2:-$here/../shared/datasets/GrabCut}"
m2n2="$build/m2n2"
bench="$build/tests/m2n2_bench_grid128"
[ -x "$m2n2" ] && [ -x "$bench" ] || { echo "build first: $m2n2 and $bench are needed" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

seconds() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(seconds)" 'BEGIN { print b - a }'; }
verdict() { awk -v s="$1" -v t="$2" 'BEGIN { print (s <= t) ? "met" : "NOT met" }'; }
line() { printf '  %-50s %7.2f s   target <= %5.1f s: %s\n' "$1" "$2" "$3" "$(verdict "$2" "$3")"; }

"$bench" image480 "$here/examples/images/fruit.png" "$tmp/img480.png"
"$m2n2" attention --image "$tmp/img480.png" --npy "$tmp/a64.npy" --no-cache -q >/dev/null

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(date -u +%F)"
"$bench" targets "$tmp/a64.npy" "$tmp/img480.png" 5 || true

echo "whole processes:"
times=()
for i in 1 2 3 4 5; do
  t0=$(seconds)
  "$m2n2" segment --source "file:$tmp/a64.npy" --image "$tmp/img480.png" --click 427,240,+ \
    --out "$tmp/mask$i.png" --no-cache -q >/dev/null
  times+=("$(since "$t0")")
done
whole=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 3p)
line "one image + one click, 854x480, grid 64, .npy" "$whole" 1.5
awk -v s="$whole" 'BEGIN { printf "  %-50s %7.0fx   target >= 70x:   %s\n", "  the same, ratio to the reference (104.5 s)", 104.5 / s, (104.5 / s >= 70) ? "met" : "NOT met" }'
t0=$(seconds)
"$m2n2" --version >/dev/null
printf '  %-50s %7.2f s   (no target: process start; LibTorch is not loaded)\n' "m2n2 --version" \
  "$(since "$t0")"

if [ ! -d "$grabcut/images" ]; then
  echo "  (GrabCut lines skipped: no $grabcut)"
  exit 0
fi
# The GrabCut eval from an empty cache into $tmp/NAME, timed against its target, with its
# metrics; EXTRA flags after the label.
grabcut_eval() {
  local name=$1 label=$2
  shift 2
  t0=$(seconds)
  "$m2n2" eval --dataset "$grabcut" --protocol m2n2 --max-clicks 20 --out "$tmp/$name" --cache-dir "$tmp/cache-$name" \
    "$@" -q >"$tmp/$name.json" 2>"$tmp/$name.log"
  line "$label" "$(since "$t0")" 150
  printf '    (its metrics: %s)\n' "$(grep -o '"NoC[0-9]*":[0-9.]*' "$tmp/$name.json" | tr '\n' ' ')"
}
grabcut_eval eval "GrabCut eval, 50 x 20 clicks, empty cache"
grabcut_eval evalj2 "  the same with --jobs 2" --jobs 2  # two images at once, each with one thread
grabcut_eval eval16 "  the same with --precision fp16" --precision fp16  # not the default
# One click per image: the protocol's first click, from the eval's records.
{
  echo '{"images": ['
  sep=""
  while read -r id x y pos; do
    img=$(ls "$grabcut/images/$id".* | head -1)
    printf '%s{"image": "%s", "objects": [{"id": "%s", "clicks": [{"x": %s, "y": %s, "positive": %s}]}]}\n' \
      "$sep" "$img" "$id" "$x" "$y" "$pos"
    sep=","
  done < <(sed -E 's/^\{"clicks":\[\[([0-9.]+),([0-9.]+),(true|false)\].*"id":"([^"]+)".*/\4 \1 \2 \3/' \
             "$tmp/eval/instances.jsonl")
  echo ']}'
} >"$tmp/clicks.json"
t0=$(seconds)
"$m2n2" segment --clicks "$tmp/clicks.json" --out "$tmp/seg" --cache-dir "$tmp/cache2" -q >/dev/null
line "segment, 50 GrabCut images x 1 click" "$(since "$t0")" 90
t0=$(seconds)
"$m2n2" segment --clicks "$tmp/clicks.json" --out "$tmp/seg2" --cache-dir "$tmp/cache3" --jobs 2 -q >/dev/null
line "  the same with --jobs 2" "$(since "$t0")" 90
