#!/bin/bash
# End-to-end `m2n2 segment` with the default source on the shipped examples:
# single image, click file, JSONL through stdin/stdout, RLE, soft maps, overlays,
# and every bad-input case of the batch form (message, exit code, no partial files).
M2N2=$1
ROOT=$2
. "$(dirname "$0")/lib.sh"
EX=$ROOT/examples
Q="--grid 32 --cache-dir $TMP/cache"

# Single-image form.
expect_ok $M2N2 segment --image $EX/images/fruit.png --click 120,172,+ --out $TMP/apple.png --overlay --soft $Q
check "single mask written" test -s $TMP/apple.png
check "overlay written" test -s $TMP/apple_overlay.png
check "soft map written" test -s $TMP/apple_soft.png
check "stdout is one JSON line" /usr/bin/python3 -c "
import json,sys; l=open('$TMP/out').read().splitlines(); assert len(l)==1; j=json.loads(l[0]); assert j['area']>1000, j"

# Batch form from the click file; the attention cache is filled on the way.
expect_ok $M2N2 segment --clicks $EX/clicks.json --out $TMP/batch --rle $Q
check "batch masks" test -s $TMP/batch/fruit/apple.png -a -s $TMP/batch/fruit/bottle.png -a -s $TMP/batch/kite/kite.png
check "batch JSON lines + masks are sane, RLE decodes to the mask" /usr/bin/python3 - $TMP <<'PY'
import json, sys, cv2, numpy as np
tmp = sys.argv[1]
lines = [json.loads(l) for l in open(f"{tmp}/out")]
assert len(lines) == 2 and all(l["ok"] for l in lines), lines
def decode(rle):
    h, w = rle["size"]; s = rle["counts"]; counts = []; p = 0
    while p < len(s):  # COCO's string form, written independently of m2n2
        x = 0; k = 0; more = True
        while more:
            c = ord(s[p]) - 48; x |= (c & 0x1f) << (5 * k); more = c & 0x20; p += 1; k += 1
            if not more and (c & 0x10): x |= -1 << (5 * k)
        if len(counts) > 2: x += counts[-2]
        counts.append(x)
    flat = np.zeros(h * w, np.uint8); pos = 0; v = 0
    for c in counts:
        flat[pos:pos + c] = v; pos += c; v = 1 - v
    return flat.reshape(w, h).T
for l in lines:
    for o in l["objects"]:
        m = cv2.imread(o["mask"], cv2.IMREAD_UNCHANGED)
        assert m.shape == (l["height"], l["width"]) and set(np.unique(m)) <= {0, 255}
        assert int((m > 0).sum()) == o["area"]
        assert (decode(o["rle"]) == (m > 0)).all(), o["id"]
apple = cv2.imread(f"{tmp}/batch/fruit/apple.png", 0) > 0
orange = cv2.imread(f"{tmp}/batch/fruit/orange.png", 0) > 0
assert apple[172, 120] and not apple[165, 190], "apple mask"
assert orange[165, 190] and not orange[172, 122], "orange mask (negative click on the apple)"
PY
check "cache written" test -n "$(ls $TMP/cache 2>/dev/null)"

# Existing outputs are not replaced without --overwrite (per object error, exit 1).
$M2N2 segment --clicks $EX/clicks.json --out $TMP/batch $Q -q > $TMP/out 2> $TMP/err
check "existing outputs: exit 1" test $? = 1
check "existing outputs: one line per object" test "$(grep -c 'exists (use --overwrite)' $TMP/err)" = 4
expect_ok $M2N2 segment --clicks $EX/clicks.json --out $TMP/batch --overwrite $Q

# JSON Lines round trip through stdin/stdout, images relative to --images.
printf '%s\n' \
  '{"image": "images/kite.png", "objects": [{"id": "k", "clicks": [{"x": 250, "y": 110, "positive": true}]}]}' \
  '' \
  '{"image": "images/fruit.png", "objects": [{"id": "a", "clicks": [{"x": 120, "y": 172}]}, {"id": "b", "clicks": [{"x": 330, "y": 180, "positive": true}]}]}' \
  | $M2N2 segment --clicks - --images $EX --out $TMP/jsonl $Q > $TMP/jl.out 2> $TMP/jl.err
check "jsonl exit 0" test $? = 0
check "jsonl: one line per entry, in order" /usr/bin/python3 -c "
import json; l=[json.loads(x) for x in open('$TMP/jl.out')]
assert [x['image'] for x in l]==['images/kite.png','images/fruit.png'], l
assert all(o['ok'] and o['ms']>0 for x in l for o in x['objects'])"
check "jsonl: logs stay on stderr" test -z "$(grep -v '^{' $TMP/jl.out)"

# Bad input in a batch: each problem is one line naming the image/object, the batch
# goes on, exit 1, nothing half-written.
mkdir -p $TMP/bad
cp $EX/images/kite.png $TMP/bad/good.png
head -c 3000 $EX/images/kite.png > $TMP/bad/truncated.png
printf 'not an image' > $TMP/bad/text.png
/usr/bin/python3 - $TMP/bad <<'PY'
import cv2, numpy as np, sys
d = sys.argv[1]
img = cv2.imread(f"{d}/good.png")
cv2.imwrite(f"{d}/gray.png", cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
cv2.imwrite(f"{d}/rgba.png", cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
cv2.imwrite(f"{d}/deep.png", img.astype(np.uint16) * 257)
PY
cat > $TMP/bad/clicks.jsonl <<'JL'
{"image": "good.png", "objects": [{"id": "ok", "clicks": [{"x": 250, "y": 110, "positive": true}]}]}
{"image": "gray.png", "objects": [{"id": "ok", "clicks": [{"x": 250, "y": 110}]}]}
{"image": "rgba.png", "objects": [{"id": "ok", "clicks": [{"x": 250, "y": 110}]}]}
{"image": "deep.png", "objects": [{"id": "ok", "clicks": [{"x": 250, "y": 110}]}]}
{"image": "truncated.png", "objects": [{"id": "t", "clicks": [{"x": 5, "y": 5}]}]}
{"image": "text.png", "objects": [{"id": "t", "clicks": [{"x": 5, "y": 5}]}]}
{"image": "missing.png", "objects": [{"id": "m", "clicks": [{"x": 5, "y": 5}]}]}
{"image": "good.png", "objects": [{"id": "outside", "clicks": [{"x": 5000, "y": 5}]}, {"id": "fine", "clicks": [{"x": 250, "y": 110}]}]}
{"image": "good.png", "objects": [{"id": "noclicks", "clicks": []}]}
{"image": "good.png", "objects": [{"id": "dup", "clicks": [{"x": 250, "y": 110}, {"x": 250, "y": 110}]}]}
{"image": "good.png", "objects": [{"id": "conflict", "clicks": [{"x": 250, "y": 110}, {"x": 250, "y": 110, "positive": false}]}]}
{"image": "good.png", "objects": [{"id": "types", "clicks": [{"x": "250", "y": 110}]}]}
{"image": "good.png", "objects": [{"id": "bool", "clicks": [{"x": 250, "y": 110, "positive": "yes"}]}]}
{"image": "good.png", "objects": [{"id": "huge", "clicks": [{"x": 1e300, "y": 110}]}]}
{"image": 42, "objects": []}
{"image": "good.png", "objects": [{"id": "../escape", "clicks": [{"x": 1, "y": 1}]}]}
{"image": "good.png", "objects": "none"}
this is not json
JL
$M2N2 segment --clicks - --images $TMP/bad --out $TMP/badout $Q < $TMP/bad/clicks.jsonl > $TMP/bad.out 2> $TMP/bad.err
check "bad batch: exit 1" test $? = 1
check "bad batch: one JSON line per input line" test "$(wc -l < $TMP/bad.out)" = 18
for pat in "truncated.png: truncated or corrupt PNG" "text.png: cannot decode" "missing.png: no such file" \
           "good.png / outside: click" "good.png / noclicks: object has no clicks" "duplicate click" \
           "conflict: conflicting clicks" "types: click coordinates must be numbers" "bool: click \"positive\" must be" \
           "huge: click coordinates must be finite" "image entry needs a non-empty string" "invalid object id" \
           "\"objects\" must be a list" "malformed JSON line"; do
  check "bad batch message: $pat" grep -qF -- "$pat" $TMP/bad.err
done
check "good items still written" test -s $TMP/badout/good/ok.png -a -s $TMP/badout/gray/ok.png -a -s $TMP/badout/rgba/ok.png \
  -a -s $TMP/badout/deep/ok.png -a -s $TMP/badout/good/fine.png -a -s $TMP/badout/good/dup.png
check "no output for failed objects" test ! -e $TMP/badout/good/outside.png -a ! -e $TMP/badout/good/conflict.png
check "no temporary files anywhere" test -z "$(find $TMP/badout $TMP/batch $TMP/jsonl -name '*.tmp*')"
check "one line per problem" test "$(grep -c "m2n2: error" $TMP/bad.err)" = 13

# --jobs: several images at once give the same lines in the same order (timings aside),
# the same messages and the same masks as one job with that job's share of the threads.
$M2N2 segment --clicks - --images $TMP/bad --out $TMP/j1 $Q --threads 1 < $TMP/bad/clicks.jsonl > $TMP/j1.out 2> $TMP/j1.err
check "--jobs reference: exit 1" test $? = 1
$M2N2 segment --clicks - --images $TMP/bad --out $TMP/j3 $Q --threads 3 --jobs 3 < $TMP/bad/clicks.jsonl > $TMP/j3.out 2> $TMP/j3.err
check "--jobs 3: exit 1" test $? = 1
check "--jobs 3: the same JSON lines in input order" /usr/bin/python3 - $TMP <<'PY'
import json, sys
tmp = sys.argv[1]
def lines(name):
    out = []
    for l in open(f"{tmp}/{name}.out"):
        j = json.loads(l)
        j.pop("attention_ms", None)
        for o in j.get("objects", []):
            o.pop("ms", None)
            if "mask" in o: o["mask"] = o["mask"].replace(f"{tmp}/j1/", "").replace(f"{tmp}/j3/", "")
        out.append(j)
    return out
a, b = lines("j1"), lines("j3")
assert len(a) == 18 and a == b, (a, b)
PY
check "--jobs 3: the same error lines" test "$(sort $TMP/j1.err)" = "$(sort $TMP/j3.err)"
check "--jobs 3: the same masks" diff -r -x segment.jsonl -x segment-run.json $TMP/j1 $TMP/j3
# Entries that share an output folder (the same image stem) keep their order: the first
# writes out/kite/k.png, the later ones find it there, with any --jobs.
for j in 1 3; do
  printf '%s\n' \
    '{"image": "images/kite.png", "objects": [{"id": "k", "clicks": [{"x": 250, "y": 110}]}]}' \
    '{"image": "images/kite.png", "objects": [{"id": "k", "clicks": [{"x": 20, "y": 20}]}, {"id": "z", "clicks": [{"x": 9, "y": 9}]}]}' \
    '{"image": "images/kite.png", "objects": [{"id": "k", "clicks": [{"x": 60, "y": 60}]}]}' \
    | $M2N2 segment --clicks - --images $EX --out $TMP/stem$j $Q --threads $j --jobs $j > $TMP/stem$j.out 2> /dev/null
done
check "--jobs 3: entries with one stem in input order" /usr/bin/python3 - $TMP <<'PY'
import json, sys
t = sys.argv[1]
def oks(j):
    return [[o["ok"] for o in json.loads(l)["objects"]] for l in open(f"{t}/stem{j}.out")]
assert oks(1) == [[True], [False, True], [False]] and oks(3) == oks(1), (oks(1), oks(3))
PY
check "--jobs 3: the first entry's mask kept" cmp $TMP/stem1/kite/k.png $TMP/stem3/kite/k.png
expect_error 2 "jobs" $M2N2 segment --clicks $EX/clicks.json --out $TMP/x --jobs 0 $Q
expect_error 2 "--jobs needs the batch form" $M2N2 segment --image $EX/images/kite.png --click 5,5,+ --out $TMP/x.png --jobs 2 $Q
# A pipeline: with stdin still open (a worker waiting for the next line), the line that
# came in is answered.
mkfifo $TMP/fifo
$M2N2 segment --clicks - --images $EX --out $TMP/pipe $Q --jobs 2 < $TMP/fifo > $TMP/pipe.out 2> $TMP/pipe.err &
PIPE_PID=$!
exec 3> $TMP/fifo
echo '{"image": "images/kite.png", "objects": [{"id": "k", "clicks": [{"x": 250, "y": 110, "positive": true}]}]}' >&3
for _ in $(seq 600); do [ -s $TMP/pipe.out ] && break; sleep 0.1; done
check "--jobs 2: an answer before stdin closes" test "$(wc -l < $TMP/pipe.out)" = 1
exec 3>&-
wait $PIPE_PID
check "--jobs 2 pipeline: exit 0 at end of input" test $? = 0

# Unwritable output folder.
mkdir -p $TMP/ro && chmod 555 $TMP/ro
if [ "$(id -u)" != 0 ]; then
  $M2N2 segment --clicks $EX/clicks.json --out $TMP/ro/x $Q > /dev/null 2> $TMP/ro.err
  check "unwritable output: exit 1" test $? = 1
fi
$M2N2 segment --clicks $EX/clicks.json --out /proc/m2n2-cannot-write $Q > /dev/null 2> $TMP/ro.err
check "unwritable output: exit 1 with a message" grep -q "cannot create output folder" $TMP/ro.err
# Malformed click file: usage error.
printf '{"images": [' > $TMP/broken.json
expect_error 2 "broken.json: malformed JSON" $M2N2 segment --clicks $TMP/broken.json --out $TMP/x $Q
printf '{"pictures": []}' > $TMP/wrong.json
expect_error 2 "expected {\"images\"" $M2N2 segment --clicks $TMP/wrong.json --out $TMP/x $Q
expect_error 2 "no such file" $M2N2 segment --clicks $TMP/none.json --out $TMP/x $Q
finish
