#!/bin/bash
# Bad input to segment, markov-map, attention, next-click, eval and auto: one line on
# stderr naming the file or argument, and the right exit code.
M2N2=$1
ROOT=$2
. "$(dirname "$0")/lib.sh"
# Inputs from the repository's own compact reference cases (no ../shared needed).
CASE=$ROOT/tests/data/parity/synthetic_1_1
OTHER=$ROOT/tests/data/parity/grabcut_banana1
IMG=$CASE/image.png
ATT=$TMP/attention.npy
gunzip -c $CASE/attention.npy.gz > $ATT
Q="--no-cache --grid 16"
/usr/bin/python3 "$(dirname "$0")/make_datasets.py" $TMP/data

/usr/bin/python3 - "$TMP" <<'PY'
import numpy as np, sys
d = sys.argv[1]
np.save(f"{d}/wrong_shape.npy", np.full((4, 4, 16), 1 / 16, np.float32))
a = np.full((16, 16), 1 / 16, np.float32); a[3, 3] = np.nan
np.save(f"{d}/nan.npy", a)
np.save(f"{d}/int.npy", np.ones((16, 16), np.int32))
np.save(f"{d}/not_stochastic.npy", np.full((16, 16), 0.5, np.float32))
np.save(f"{d}/n12.npy", np.full((12, 12), 1 / 12, np.float32))
open(f"{d}/corrupt.png", "wb").write(b"\x89PNG\r\n\x1a\n garbage")
open(f"{d}/empty.npy", "wb").write(b"")
PY

# segment, single-image form
expect_error 1 "no such file" $M2N2 segment --image $TMP/missing.png --click 1,1,+ --out $TMP/m.png $Q
expect_error 1 "corrupt" $M2N2 segment --image $TMP/corrupt.png --click 1,1,+ --out $TMP/m.png $Q
expect_error 2 "outside" $M2N2 segment --image $IMG --click 5000,1,+ --out $TMP/m.png $Q
expect_error 2 "outside" $M2N2 segment --image $IMG --click -3,1,+ --out $TMP/m.png $Q
expect_error 2 "label of" $M2N2 segment --image $IMG --click 10,10,x --out $TMP/m.png $Q
expect_error 2 "not numbers" $M2N2 segment --image $IMG --click a,b,+ --out $TMP/m.png $Q
expect_error 2 "expected X,Y,+" $M2N2 segment --image $IMG --click 10 --out $TMP/m.png $Q
expect_error 2 "finite" $M2N2 segment --image $IMG --click nan,3,+ --out $TMP/m.png $Q
expect_error 2 "wrong_shape.npy" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/wrong_shape.npy
expect_error 2 "non-finite" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/nan.npy
expect_error 2 "float32 or float16" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/int.npy
expect_error 2 "row-stochastic" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/not_stochastic.npy
expect_error 2 "not a square" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/n12.npy
expect_error 2 "empty.npy" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/empty.npy
expect_error 2 "no such file" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/none.npy
expect_error 2 "unknown source" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source magic
expect_error 2 "TorchScript" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source torchscript:$TMP/corrupt.png
expect_error 2 "" $M2N2 segment --image $IMG --out $TMP/m.png $Q
expect_error 2 "" $M2N2 segment --bogus-flag
check "no partial mask written" test ! -e $TMP/m.png
check "no temporary files left" test -z "$(ls -A $TMP | grep -E '\.tmp')"

# markov-map
expect_error 1 "no such file" $M2N2 markov-map --image $TMP/missing.png --point 1,1 --npy $TMP/o.npy $Q
expect_error 2 "outside" $M2N2 markov-map --image $IMG --point 1000,1 --npy $TMP/o.npy --source file:$ATT
expect_error 2 "expected X,Y" $M2N2 markov-map --image $IMG --point 12 --npy $TMP/o.npy --source file:$ATT
expect_error 2 "non-finite" $M2N2 markov-map --image $IMG --point 1,1 --npy $TMP/o.npy --source file:$TMP/nan.npy
expect_error 2 "wrong_shape.npy" $M2N2 markov-map --image $IMG --point 1,1 --npy $TMP/o.npy --source file:$TMP/wrong_shape.npy
check "no markov-map output on error" test ! -e $TMP/o.npy

# attention
expect_error 1 "no such file" $M2N2 attention --image $TMP/missing.png --npy $TMP/a.npy $Q
expect_error 2 "grid) must be in 4..256" $M2N2 attention --image $IMG --npy $TMP/a.npy --no-cache --source default:grid=1000

# next-click
expect_error 2 "protocol" $M2N2 next-click --gt $CASE/gt.png --pred $CASE/gt.png --protocol nope
expect_error 1 "no such file" $M2N2 next-click --gt $TMP/missing.png --pred $CASE/gt.png
expect_error 1 "size differs" $M2N2 next-click --gt $CASE/gt.png --pred $OTHER/gt.png

# eval
expect_error 2 "no such file" $M2N2 eval --dataset $TMP/nothing --out $TMP/ev $Q
expect_error 2 "shard" $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/ev --shard 3/2 $Q
expect_error 2 "protocol" $M2N2 eval --dataset $TMP/data/grabcut --out $TMP/ev --protocol x $Q

# auto
expect_error 2 "method" $M2N2 auto --method kmeans --image $IMG --out $TMP/l.png $Q
expect_error 2 "exactly one" $M2N2 auto --out $TMP/l.png $Q
expect_error 1 "no such file" $M2N2 auto --image $TMP/missing.png --out $TMP/l.png $Q
expect_error 2 "stop" $M2N2 auto --method ncut --stop sometimes --image $IMG --out $TMP/l.png $Q

# More of the bad-input corpus: zero-size and absurd images, Inf and wrong dtypes in
# .npy, folders and symlink loops where files are expected, memory limits.
/usr/bin/python3 - "$TMP" <<'PY'
import numpy as np, struct, sys, zlib
d = sys.argv[1]
a = np.full((16, 16), 1 / 16, np.float32); a[0, 0] = np.inf
np.save(f"{d}/inf.npy", a)
np.save(f"{d}/f64.npy", np.full((16, 16), 1 / 16, np.float64))
np.save(f"{d}/big_endian.npy", np.full((16, 16), 1 / 16, ">f4"))
np.save(f"{d}/zero.npy", np.zeros((0, 0), np.float32))
def chunk(t, b): return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
def png(w, h, body=b""):
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")
open(f"{d}/absurd.png", "wb").write(png(200000, 200000))
open(f"{d}/zero_size.png", "wb").write(png(0, 0))
open(f"{d}/zero_bytes.png", "wb").write(b"")
open(f"{d}/truncated.jpg", "wb").write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 100)
PY
mkdir -p $TMP/folder.png $TMP/folder.npy
ln -s $TMP/loop_b $TMP/loop_a; ln -s $TMP/loop_a $TMP/loop_b
expect_error 2 "non-finite" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/inf.npy
expect_error 2 "float32 or float16" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/f64.npy
expect_error 2 "big-endian" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/big_endian.npy
expect_error 2 "zero.npy" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/zero.npy
expect_error 2 "is a directory" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source file:$TMP/folder.npy
expect_error 1 "absurd.png" $M2N2 segment --image $TMP/absurd.png --click 1,1,+ --out $TMP/m.png $Q
expect_error 1 "zero_size.png" $M2N2 segment --image $TMP/zero_size.png --click 0,0,+ --out $TMP/m.png $Q
expect_error 1 "zero_bytes.png: empty file" $M2N2 segment --image $TMP/zero_bytes.png --click 0,0,+ --out $TMP/m.png $Q
expect_error 1 "truncated or corrupt JPEG" $M2N2 segment --image $TMP/truncated.jpg --click 0,0,+ --out $TMP/m.png $Q
expect_error 1 "is a directory" $M2N2 segment --image $TMP/folder.png --click 0,0,+ --out $TMP/m.png $Q
expect_error 1 "loop_a" $M2N2 segment --image $TMP/loop_a --click 0,0,+ --out $TMP/m.png $Q
expect_error 1 "is a directory" $M2N2 markov-map --image $TMP/folder.png --point 1,1 --npy $TMP/o.npy $Q
expect_error 1 "loop_a" $M2N2 auto --image $TMP/loop_a --out $TMP/l.png $Q
expect_error 2 "loop_a" $M2N2 segment --clicks $TMP/loop_a --out $TMP/x $Q
expect_error 2 "is a directory" $M2N2 segment --clicks $TMP/folder.png --out $TMP/x $Q
expect_error 2 "loop_a" $M2N2 eval --dataset $TMP/loop_a --out $TMP/ev2 $Q
expect_error 2 "images/ and masks/" $M2N2 eval --dataset $TMP/folder.png --out $TMP/ev3 $Q
expect_error 2 "loop_a" $M2N2 segment --image $IMG --click 1,1,+ --out $TMP/m.png --source torchscript:$TMP/loop_a
# Memory: the operator is estimated before it is built and refused above the limit.
expect_error 1 "allowed (--max-memory); use a smaller grid" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --no-cache --grid 64 --max-memory 4M
expect_error 1 "attention maps) needs about" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --source torchscript:$(dirname "$0")/../../models/tiny-test-attention.pt --max-memory 1K
expect_error 2 "max-memory" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png $Q --max-memory lots
if [ "$(id -u)" != 0 ]; then
  cp $IMG $TMP/unreadable.png && chmod 000 $TMP/unreadable.png
  expect_error 1 "unreadable.png" $M2N2 segment --image $TMP/unreadable.png --click 1,1,+ --out $TMP/m.png $Q
fi
check "still no partial mask" test ! -e $TMP/m.png

# Attention with a key token that no query attends to (a column of zeros): Sinkhorn
# cannot balance it. The image fails with a line naming the token; the batch goes on
# to the next image and leaves no folder for the failed one.
/usr/bin/python3 - "$TMP" "$ATT" <<'PY'
import numpy as np, sys
a = np.load(sys.argv[2]).astype(np.float64).reshape(256, 256)
a[:, 37] = 0
np.save(f"{sys.argv[1]}/empty_column.npy", (a / a.sum(1, keepdims=True)).astype(np.float32))
PY
EMPTY="key token 37 (grid row 2, column 5) gets no attention from any query"
expect_error 1 "$EMPTY" $M2N2 segment --image $IMG --click 10,10,+ --out $TMP/m.png --no-cache --source file:$TMP/empty_column.npy
expect_error 1 "$EMPTY" $M2N2 markov-map --image $IMG --point 10,10 --npy $TMP/o.npy --no-cache --source file:$TMP/empty_column.npy --precision fp16
check "no mask for an attention that cannot be balanced" test ! -e $TMP/m.png
cp $IMG $TMP/img_a.png
cp $IMG $TMP/img_b.png
echo '{"image": "img_a.png", "objects": [{"id": "o", "clicks": [{"x": 10, "y": 10}]}]}
{"image": "img_b.png", "objects": [{"id": "o", "clicks": [{"x": 10, "y": 10}]}]}' > $TMP/two.jsonl
$M2N2 segment --clicks - --images $TMP --out $TMP/empty_out --no-cache --source file:$TMP/empty_column.npy \
  < $TMP/two.jsonl > $TMP/two.out 2> $TMP/two.err
check "exit 1 when images fail" test $? = 1
check "one JSON line per image, each with the error" test "$(grep -c "$EMPTY" $TMP/two.out)" = 2
check "one error line per image on stderr" test "$(grep -c "$EMPTY" $TMP/two.err)" = 2
check "no output folder for images that failed" test ! -e $TMP/empty_out/img_a

# Usage errors print nothing on stdout.
$M2N2 segment --image $IMG --click 1,1,q --out $TMP/m.png $Q > $TMP/stdout 2> /dev/null
check "stdout empty on usage error" test ! -s $TMP/stdout
finish
