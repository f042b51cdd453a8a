#!/bin/bash
# `m2n2 auto` (DiffSeg, random-walk NCut) from the CLI, single image and folder, and
# `m2n2 eval-auto` on a toy set with a known answer.
M2N2=$1
ROOT=$2
. "$(dirname "$0")/lib.sh"
EX=$ROOT/examples
Q="--grid 32 --no-cache -q"

for method in diffseg ncut; do
  expect_ok $M2N2 auto --method $method --image $EX/images/kite.png --out $TMP/$method.png --vis $TMP/${method}_vis.png $Q
  check "$method: 16-bit label map at image size" /usr/bin/python3 -c "
import cv2, json, numpy as np
l = cv2.imread('$TMP/$method.png', cv2.IMREAD_UNCHANGED)
assert l.dtype == np.uint16 and l.shape == (300, 420), (l.dtype, l.shape)
j = json.loads(open('$TMP/out').read())
assert j['segments'] == len(np.unique(l)), j
# NCut labels are 0..K-1; DiffSeg's are its raw proposal indices by default (the reference)
assert l.max() == j['segments'] - 1 if '$method' == 'ncut' else l.max() < int(j['meta']['proposals']), j
assert j['segments'] >= 2
assert l[110, 230] != l[20, 20], 'kite and sky share a label'"
  check "$method: visualisation" test -s $TMP/${method}_vis.png
done
# The default source for DiffSeg: on the three-region scene where its 4-level pyramid merged
# two regions (2 segments), the single grid-48 map it now uses separates all three.
/usr/bin/python3 $ROOT/scripts/diffseg_flat_scenes.py $TMP/flat 1 0
expect_ok $M2N2 auto --method diffseg --images $TMP/flat/images --out $TMP/flat/pred --no-cache -q
check "diffseg, default source: three flat regions, three segments" /usr/bin/python3 -c "
import json; j = json.loads(open('$TMP/out').read()); assert j['segments'] == 3, j"
expect_ok $M2N2 eval-auto --pred $TMP/flat/pred --gt $TMP/flat/gt -q
check "diffseg, default source: mIoU on the three-region scene" /usr/bin/python3 -c "
import json; m = json.loads(open('$TMP/out').read()); assert m['mIoU'] > 0.8, m"

# DiffSeg's reference settings and their departures.
expect_ok $M2N2 auto --method diffseg --image $EX/images/kite.png --out $TMP/dc.png --labels compact --crop center \
  --kl-precision fp32 $Q
check "diffseg --labels compact --crop center --kl-precision fp32" /usr/bin/python3 -c "
import cv2, json, numpy as np
l = cv2.imread('$TMP/dc.png', cv2.IMREAD_UNCHANGED)
assert l.shape == (512, 512), l.shape
j = json.loads(open('$TMP/out').read())
assert l.max() == j['segments'] - 1 == len(np.unique(l)) - 1, j
assert j['meta']['kl_precision'] == 'fp32' and j['meta']['labels'] == 'compact' and 'fp16_underflow_maps' not in j['meta'], j"
expect_ok $M2N2 auto --method diffseg --image $EX/images/kite.png --out $TMP/dr.png $Q
check "diffseg defaults: fp16, raw labels, underflow count" /usr/bin/python3 -c "
import json; j = json.loads(open('$TMP/out').read())
assert j['meta']['kl_precision'] == 'fp16' and j['meta']['labels'] == 'raw', j
n, of, tot = j['meta']['fp16_underflow_maps'].split(' '); assert of == 'of' and 0 <= int(n) <= int(tot), j"
expect_error 2 "kl-precision" $M2N2 auto --method diffseg --image $EX/images/kite.png --out $TMP/x.png --kl-precision fp64 $Q
expect_error 2 "labels" $M2N2 auto --method diffseg --image $EX/images/kite.png --out $TMP/x.png --labels sparse $Q
expect_error 2 "crop" $M2N2 auto --method diffseg --image $EX/images/kite.png --out $TMP/x.png --crop left $Q

expect_ok $M2N2 auto --method ncut --graph similarity --image $EX/images/kite.png --out $TMP/ns.png $Q
check "ncut --graph similarity" /usr/bin/python3 -c "
import json; j = json.loads(open('$TMP/out').read()); assert j['meta']['graph'] == 'similarity' and j['segments'] >= 1, j"
expect_error 2 "graph" $M2N2 auto --method ncut --image $EX/images/kite.png --out $TMP/x.png --graph features $Q

mkdir -p $TMP/imgs && cp $EX/images/*.png $TMP/imgs/
expect_ok $M2N2 auto --method diffseg --images $TMP/imgs --out $TMP/labels --vis $TMP/vis $Q
check "folder form" test -s $TMP/labels/fruit.png -a -s $TMP/labels/kite.png -a -s $TMP/vis/kite.png

# Shards and reruns: --shard auto from SLURM's variables; a rerun with --resume redoes
# nothing, and one with another shard or another flag is refused.
expect_ok env SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=2 $M2N2 auto --method diffseg --images $TMP/imgs --out $TMP/sh $Q --shard auto
check "--shard auto: image 1 of 2 only" /usr/bin/python3 -c "
import json; l = [json.loads(x) for x in open('$TMP/out')]; assert [x['image'].endswith('kite.png') for x in l] == [True], l"
expect_ok $M2N2 auto --method diffseg --images $TMP/imgs --out $TMP/sh $Q --shard 1/2 --resume
check "--resume: nothing left to do" test ! -s $TMP/out
check "--resume: one record per image" test "$(wc -l < $TMP/sh/auto.jsonl)" = 1
rm $TMP/sh/kite.png
expect_ok $M2N2 auto --method diffseg --images $TMP/imgs --out $TMP/sh $Q --shard 1/2 --resume
check "--resume: an image whose labels are gone is labelled again" test -s $TMP/sh/kite.png -a "$(wc -l < $TMP/out)" = 1
expect_error 2 "shard" $M2N2 auto --method diffseg --images $TMP/imgs --out $TMP/sh $Q --shard 0/2 --resume
expect_error 2 "anchors" $M2N2 auto --method diffseg --images $TMP/imgs --out $TMP/sh $Q --shard 1/2 --resume --anchors 8
expect_error 2 "no scheduler index" $M2N2 auto --method diffseg --images $TMP/imgs --out $TMP/sh2 $Q --shard auto

# eval-auto: prediction = GT with labels permuted and one region split -> the
# Hungarian matching maps the permutation; the split region loses half its pixels.
/usr/bin/python3 - $TMP <<'PY'
import cv2, numpy as np, os, sys
t = sys.argv[1]
os.makedirs(f"{t}/gt", exist_ok=True); os.makedirs(f"{t}/pred", exist_ok=True)
gt = np.zeros((10, 20), np.uint8); gt[:, 10:] = 1; gt[0, :] = 255  # 255 = ignored
pred = np.zeros((10, 20), np.uint16); pred[:, :10] = 3; pred[:, 10:15] = 0; pred[:, 15:] = 5
cv2.imwrite(f"{t}/gt/x.png", gt); cv2.imwrite(f"{t}/pred/x.png", pred)
PY
expect_ok $M2N2 eval-auto --pred $TMP/pred --gt $TMP/gt
check "eval-auto: known accuracy and mIoU" /usr/bin/python3 -c "
import json; m = json.loads(open('$TMP/out').read())
# class 0 <- label 3 (90 px, IoU 1); class 1 <- label 0 or 5 (45 of 90 px, IoU 0.5)
assert abs(m['pixel_accuracy'] - 135/180) < 1e-9 and abs(m['mIoU'] - 0.75) < 1e-9, m"
# One image: dataset-level matching is the per-image answer; majority gives labels 0 and 5
# both to class 1.
expect_ok $M2N2 eval-auto --pred $TMP/pred --gt $TMP/gt --matching dataset
check "eval-auto --matching dataset" /usr/bin/python3 -c "
import json; m = json.loads(open('$TMP/out').read())
assert m['matching'] == 'dataset' and abs(m['mIoU'] - 0.75) < 1e-9, m"
expect_ok $M2N2 eval-auto --pred $TMP/pred --gt $TMP/gt --matching majority
check "eval-auto --matching majority" /usr/bin/python3 -c "
import json; m = json.loads(open('$TMP/out').read())
assert m['matching'] == 'majority' and abs(m['mIoU'] - 1.0) < 1e-9 and abs(m['pixel_accuracy'] - 1.0) < 1e-9, m"
expect_error 2 "matching" $M2N2 eval-auto --pred $TMP/pred --gt $TMP/gt --matching best
expect_error 2 "protocol" $M2N2 eval-auto --pred $TMP/pred --gt $TMP/gt --protocol ade20k
# The protocol wants 512×512 predictions (or the GT's size): the 10×20 toy is scored as cropped.
expect_ok $M2N2 eval-auto --pred $TMP/pred --gt $TMP/gt --protocol cityscapes27
check "eval-auto --protocol names itself and has 27 classes" /usr/bin/python3 -c "
import json; m = json.loads(open('$TMP/out').read()); assert m['protocol'] == 'cityscapes27' and m['classes'] == 27, m"
# LightCluster on a folder through the tiny ViT archive (format m2n2-attention/2): label
# maps for every image, the model file; with the embedded default source (no features),
# one line naming the missing kind, exit 2.
mkdir -p $TMP/lc
/usr/bin/python3 - $ROOT $TMP/lc <<'PY'
import cv2, sys
root, d = sys.argv[1], sys.argv[2]
for i, name in enumerate(["fruit.png", "kite.png"] * 3):
    img = cv2.imread(f"{root}/examples/images/{name}")
    img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)  # quick under ASan
    cv2.imwrite(f"{d}/im{i}.png", cv2.flip(img, 1) if i >= 2 else img)
PY
expect_error 2 "lightcluster needs 'keys' features" $M2N2 auto --method lightcluster --images $TMP/lc --out $TMP/lc_out -q
expect_ok env M2N2_CACHE_DIR=$TMP/lc_cache $M2N2 auto --method lightcluster --images $TMP/lc --out $TMP/lc_out \
  --source torchscript:$ROOT/models/tiny-vit-features.pt --classes 3 --categories 2 -q
check "lightcluster: labels and model" /usr/bin/python3 -c "
import cv2, json, numpy as np
lines = [json.loads(l) for l in open('$TMP/out')]
assert len(lines) == 6 and all(l['ok'] for l in lines), lines
for l in lines:
    m = cv2.imread(l['labels'], cv2.IMREAD_UNCHANGED)
    assert m is not None and m.dtype == np.uint16 and m.shape[:2] in [(180, 240), (150, 210)], l
    assert m.max() <= 3, m.max()
model = json.load(open('$TMP/lc_out/lightcluster.json'))
assert model['settings']['vote'] == 2 and len(model['categories']) == 2 and 1 <= len(model['classes']) <= 3, model.keys()
assert len(model['dataset']['fg']) == 32 and model['keys']['grid'] == [8, 8]"
check "lightcluster: no work folder left" test ! -e $TMP/lc_out/.lightcluster-work
# The model labels images without clustering: on the same images, the same labels.
expect_ok env M2N2_CACHE_DIR=$TMP/lc_cache $M2N2 auto --method lightcluster --images $TMP/lc --out $TMP/lc_apply \
  --source torchscript:$ROOT/models/tiny-vit-features.pt --model $TMP/lc_out/lightcluster.json -q
for f in $TMP/lc_out/im*.png; do
  check "lightcluster --model: same labels for $(basename $f)" cmp -s $f $TMP/lc_apply/$(basename $f)
done
printf '{"method": "other"}' > $TMP/bad_model.json
expect_error 2 "bad_model.json\|model" $M2N2 auto --method lightcluster --images $TMP/lc --out $TMP/lc_apply2 \
  --source torchscript:$ROOT/models/tiny-vit-features.pt --model $TMP/bad_model.json -q
# An image that cannot be read: exit 1, the others labelled, the work folder kept; the
# same run again resumes from it (every mask reused) and writes the same labels.
cp -r $TMP/lc $TMP/lc2
printf 'not a png' > $TMP/lc2/broken.png
env M2N2_CACHE_DIR=$TMP/lc_cache $M2N2 auto --method lightcluster --images $TMP/lc2 --out $TMP/lc2_out \
  --source torchscript:$ROOT/models/tiny-vit-features.pt --classes 3 --categories 2 > $TMP/lc2_a.txt 2> $TMP/lc2_a.err
check "lightcluster: a broken image is exit 1" test $? = 1
check "lightcluster: work folder kept after a failure" test -e $TMP/lc2_out/.lightcluster-work/run.json
mkdir -p $TMP/lc2_first && cp $TMP/lc2_out/im*.png $TMP/lc2_first/
env M2N2_CACHE_DIR=$TMP/lc_cache $M2N2 auto --method lightcluster --images $TMP/lc2 --out $TMP/lc2_out --overwrite \
  --source torchscript:$ROOT/models/tiny-vit-features.pt --classes 3 --categories 2 > $TMP/lc2_b.txt 2> $TMP/lc2_b.err
check "lightcluster: the rerun resumes all six images" grep -q "6 resumed" $TMP/lc2_b.err
for f in $TMP/lc2_first/im*.png; do
  check "lightcluster: resumed labels equal $(basename $f)" cmp -s $f $TMP/lc2_out/$(basename $f)
done
expect_error 2 "exists" $M2N2 auto --method lightcluster --images $TMP/lc --out $TMP/lc_out \
  --source torchscript:$ROOT/models/tiny-vit-features.pt -q
expect_error 2 "vote" $M2N2 auto --method lightcluster --images $TMP/lc --out $TMP/lc_out2 --vote 4 \
  --source torchscript:$ROOT/models/tiny-vit-features.pt -q
finish
