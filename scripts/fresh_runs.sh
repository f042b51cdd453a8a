#!/bin/bash
# Runs `m2n2 attention` in N fresh processes on one image and counts failures and
# reruns (the loader's "non-finite attention; running it once more" warning).
#   scripts/fresh_runs.sh N SOURCE [IMAGE] [M2N2]
# e.g. scripts/fresh_runs.sh 200 torchscript:models/tiny-sd2-attention.pt
set -u
n=$1 source=$2
image=${3:-$(dirname "$0")/../examples/images/kite.png}
m2n2=${4:-$(dirname "$0")/../build/m2n2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0 rerun=0
for i in $(seq 1 "$n"); do
  if ! "$m2n2" attention --image "$image" --source "$source" --npy "$tmp/a.npy" --no-cache --device cpu \
       > /dev/null 2> "$tmp/err"; then
    fail=$((fail + 1))
    echo "run $i failed: $(tail -1 "$tmp/err")" >&2
  fi
  grep -q "running it once more" "$tmp/err" && rerun=$((rerun + 1))
done
echo "runs=$n failures=$fail reruns=$rerun"
[ "$fail" = 0 ]
