#!/bin/bash
# Issue 19: a bad item never ends a batch (every exception type, by injection), runs
# never mix settings, COCO instances grouped and sharded by image, segment --shard,
# --max-side, range checks and far-out coordinates.
M2N2=$1
ROOT=$2
. "$(dirname "$0")/lib.sh"
/usr/bin/python3 "$(dirname "$0")/make_datasets.py" $TMP/data
EX=$ROOT/examples/clicks.json
Q="--no-cache --grid 16 -q"

# --- A failing item of any exception type: that item fails, the rest are written, exit 1.
for kind in cv bad_alloc c10; do
  M2N2_INJECT_FAULT="$kind@images/fruit.png" $M2N2 segment --clicks $EX --out $TMP/seg_$kind --no-cache --grid 16 \
    > $TMP/seg_$kind.jsonl 2> $TMP/seg_$kind.err
  rc=$?
  check "segment with an injected $kind fault in one image exits 1 (got $rc)" test $rc = 1
  check "$kind: one error line naming the image" test "$(grep -c 'error: images/fruit.png' $TMP/seg_$kind.err)" = 1
  check "$kind: the other image's masks are written" test -s $TMP/seg_$kind/kite/kite.png
  check "$kind: the failed image wrote nothing" test ! -e $TMP/seg_$kind/fruit/apple.png
  check "$kind: one JSON line per image" test "$(grep -c . $TMP/seg_$kind.jsonl)" = 2
done
if grep -q 'Exception raised from\|backtrace' $TMP/seg_c10.err; then bad "c10 error printed more than its first line"; else ok; fi
# ... and in one object: the image's other objects are still written.
M2N2_INJECT_FAULT="bad_alloc@images/fruit.png#apple" $M2N2 segment --clicks $EX --out $TMP/seg_obj --no-cache --grid 16 \
  > $TMP/seg_obj.jsonl 2> $TMP/seg_obj.err
check "an object's failure exits 1" test $? = 1
check "the failing object is named" grep -q "images/fruit.png / apple: out of memory" $TMP/seg_obj.err
check "the image's other objects are written" test -s $TMP/seg_obj/fruit/bottle.png
check "the failed object wrote nothing" test ! -e $TMP/seg_obj/fruit/apple.png

# --- Out of GPU memory with --device auto: the image is retried on the CPU (a warning).
M2N2_INJECT_FAULT="cuda_oom@images/kite.png" $M2N2 segment --clicks $EX --out $TMP/seg_oom --no-cache --grid 16 \
  > /dev/null 2> $TMP/seg_oom.err
check "auto device: out of memory retried on the CPU, exit 0" test $? = 0
check "the retry is said once" test "$(grep -c 'retrying this image on the CPU' $TMP/seg_oom.err)" = 1
check "the retried image is written" test -s $TMP/seg_oom/kite/kite.png
M2N2_INJECT_FAULT="cuda_oom@images/kite.png" $M2N2 segment --clicks $EX --out $TMP/seg_oom2 --no-cache --grid 16 \
  --device cuda > /dev/null 2> /dev/null
check "explicit --device is never silently changed" test $? != 0

# --- eval: an instance's failure is that instance's only.
M2N2_INJECT_FAULT="bad_alloc@s1" $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/ev_fault --max-clicks 2 $Q \
  > /dev/null 2> $TMP/ev_fault.err
check "eval with one failing instance exits 1" test $? = 1
check "eval names the instance" grep -q "s1: out of memory" $TMP/ev_fault.err
check "eval records the other instances" test "$(grep -c . $TMP/ev_fault/instances.jsonl)" = 2

# --- Settings are recorded, and a resume or merge with other settings is refused.
expect_ok $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/ev --max-clicks 2 $Q --precision fp16 --no-interpolation
check "metrics.json records every setting" /usr/bin/python3 - $TMP/ev <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/metrics.json"))
s = m["settings"]
assert s["precision"] == "fp16" and s["interpolation"] is False and s["max_side"] == 0, s
assert m["device"] == "auto" and m["source"].startswith("default@") and "grid=16" in m["source"], m
assert m["mask_format"] == "grabcut" and m["max_clicks"] == 2 and m["dataset"].endswith("grabcut"), m
r = json.load(open(f"{sys.argv[1]}/run.json"))
assert r["settings"] == s
PY
expect_error 2 "other settings (temperature 0.65 vs 0.5)" $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/ev --max-clicks 2 $Q \
  --precision fp16 --no-interpolation --resume --temperature 0.5
expect_error 2 "other settings (interpolation false vs true)" $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/ev --max-clicks 2 $Q \
  --precision fp16 --resume
expect_error 2 "other settings (protocol" $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/ev --max-clicks 2 $Q \
  --precision fp16 --no-interpolation --resume --protocol ritm
expect_ok $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/ev --max-clicks 2 $Q --precision fp16 --no-interpolation --resume
expect_ok $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/sh0 --shard 0/2 --max-clicks 2 $Q
expect_ok $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/sh1 --shard 1/2 --max-clicks 2 $Q --max-iterations 500
expect_error 2 "other settings than $TMP/sh0 (max_iterations 1000 vs 500)" $M2N2 eval-merge --out $TMP/merged $TMP/sh0 $TMP/sh1
expect_ok $M2N2 eval --dataset $TMP/data/davis --mask-format davis --out $TMP/dv --shard 1/2 --max-clicks 2 $Q
expect_error 2 "(dataset" $M2N2 eval-merge --out $TMP/merged $TMP/sh0 $TMP/dv

# --- COCO: one image's instances are consecutive, its attention computed once; shards by image.
expect_ok $M2N2 eval --dataset $TMP/data/coco/interleaved.json --images $TMP/data/coco/imgs --out $TMP/coco --max-clicks 2 $Q
expect_ok $M2N2 eval --dataset $TMP/data/coco/interleaved.json --images $TMP/data/coco/imgs --out $TMP/coco0 --shard 0/2 --max-clicks 2 $Q
check "attention once per image, shards by image" /usr/bin/python3 - $TMP <<'PY'
import json, sys
t = sys.argv[1]
recs = [json.loads(l) for l in open(f"{t}/coco/instances.jsonl")]
assert [r["id"] for r in recs] == ["20", "22", "21", "23"], [r["id"] for r in recs]
assert [r["seconds_attention"] > 0 for r in recs] == [True, False, True, False], recs
assert sorted(json.loads(l)["id"] for l in open(f"{t}/coco0/instances.jsonl")) == ["20", "22"]
PY

# --- segment --shard: disjoint shards that together cover the batch.
expect_ok $M2N2 segment --clicks $EX --out $TMP/s0 --shard 0/2 $Q
cp $TMP/out $TMP/s0.jsonl
expect_ok $M2N2 segment --clicks $EX --out $TMP/s1 --shard 1/2 $Q
cp $TMP/out $TMP/s1.jsonl
check "segment shards split the images" /usr/bin/python3 -c "
import json
a = [json.loads(l)['image'] for l in open('$TMP/s0.jsonl')]; b = [json.loads(l)['image'] for l in open('$TMP/s1.jsonl')]
assert a == ['images/fruit.png'] and b == ['images/kite.png'], (a, b)"
expect_error 2 "--shard: expected I/N" $M2N2 segment --clicks $EX --out $TMP/s2 --shard 2/2 $Q
expect_error 2 "--shard: expected I/N" $M2N2 segment --clicks $EX --out $TMP/s2 --shard 1/2x $Q
expect_error 2 "batch form" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --shard 0/2 $Q

# --- --max-side: the attention path runs on a smaller copy, the mask comes back at full size.
expect_ok $M2N2 segment --image $ROOT/examples/images/kite.png --click 250,110,+ --out $TMP/small.png --max-side 160 --no-cache
check "max-side mask has the image's size" /usr/bin/python3 -c "
import cv2
a = cv2.imread('$TMP/small.png', 0); b = cv2.imread('$ROOT/examples/images/kite.png')
assert a.shape == b.shape[:2] and a[110, 250] == 255, (a.shape, b.shape)"
expect_error 2 "--max-side must be in 16..65536" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --max-side 3

# --- Range checks name the flag and the limit; far-out coordinates never overflow.
expect_error 2 "--grid (default:grid) must be in 4..256, got 2000" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --grid 2000 --no-cache
expect_error 2 "--grid (default:grid) must be in 4..256, got -3" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --grid -3 --no-cache
expect_error 2 "grid must be an integer" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --source default:grid=1e20 --no-cache
expect_error 1 "the default source's attention at grid 256 needs about" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --grid 256 --max-memory 2G --no-cache
expect_error 2 "outside" $M2N2 segment --image $ROOT/examples/images/kite.png --click 1e20,5,+ --out $TMP/k.png $Q
expect_error 2 "outside" $M2N2 segment --image $ROOT/examples/images/kite.png --click -1e300,5,+ --out $TMP/k.png $Q
expect_error 2 "outside" $M2N2 markov-map --image $ROOT/examples/images/kite.png --point 5,1e19 --npy $TMP/o.npy $Q
expect_ok $M2N2 next-click --gt $ROOT/tests/data/parity/synthetic_1_1/gt.png --pred $ROOT/tests/data/parity/synthetic_1_1/gt.png --prev 1e20,5 --protocol ritm
expect_error 2 "--max-iterations must be in 1..100000" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --max-iterations 0 $Q
expect_error 2 "--threads must be in 0..4096" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --threads -1 $Q
expect_error 2 "--ncut-grid must be in 1..256" $M2N2 auto --method ncut --image $ROOT/examples/images/kite.png --out $TMP/l.png --ncut-grid 100000 $Q
# Library checks (fields) reach the user under their flags' names.
expect_error 2 "^.*--temperature must be a finite number > 0, got -1$" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --temperature -1 $Q
expect_error 2 "--markov-threshold must be in (0, 1), got 1$" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5,5,+ --out $TMP/k.png --markov-threshold 1 $Q
expect_error 2 "--anchors must be in 1..64, got 0$" $M2N2 auto --method diffseg --image $ROOT/examples/images/kite.png --out $TMP/l.png --anchors 0 $Q
expect_error 2 "--click: expected X,Y,+ or X,Y,-, got '5'" $M2N2 segment --image $ROOT/examples/images/kite.png --click 5 --out $TMP/k.png $Q
expect_error 2 "--limit must be in" $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/evl --limit -1 $Q
check "nothing written by refused commands" test ! -e $TMP/k.png
finish
