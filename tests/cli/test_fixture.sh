#!/bin/bash
# scripts/make_test_model.py still produces a loadable TorchScript file whose outputs
# equal those of the committed models/tiny-test-attention.pt, and the fixture goes
# through the whole segment path on CPU.
M2N2=$1
ROOT=$2
. "$(dirname "$0")/lib.sh"
IMG=$ROOT/examples/images/kite.png
expect_ok /usr/bin/python3 $ROOT/scripts/make_test_model.py --out $TMP/regen.pt
expect_ok $M2N2 attention --image $IMG --source torchscript:$TMP/regen.pt --npy $TMP/regen.npy --no-cache --device cpu
expect_ok $M2N2 attention --image $IMG --source torchscript:$ROOT/models/tiny-test-attention.pt --npy $TMP/committed.npy --no-cache --device cpu
check "regenerated model gives the committed model's outputs" /usr/bin/python3 -c "
import numpy as np
a = np.load('$TMP/regen.npy'); b = np.load('$TMP/committed.npy')
assert a.shape == (8, 8, 8, 8), a.shape
assert np.abs(a - b).max() < 1e-6, np.abs(a - b).max()
assert np.allclose(a.reshape(64, 64).sum(1), 1, atol=1e-4)"
expect_ok $M2N2 segment --image $IMG --source torchscript:$ROOT/models/tiny-test-attention.pt --device cpu \
  --click 250,110,+ --click 40,40,- --out $TMP/m.png --no-cache
# Known answer: the committed mask this fixture gives on the kite with these clicks
# (tests/data/known/fixture_kite.png); any change of the operator, the upsampling or the
# merge moves it. The clicked pixels alone (always forced) would give IoU ~0.
check "fixture mask equals the known answer" /usr/bin/python3 -c "
import cv2, numpy as np
a = cv2.imread('$TMP/m.png', 0) > 0; b = cv2.imread('$ROOT/tests/data/known/fixture_kite.png', 0) > 0
assert a.shape == b.shape and b.sum() > 1000, (a.shape, b.shape, b.sum())
iou = (a & b).sum() / (a | b).sum()
assert iou >= 0.999, iou"
# The tiny ViT of format m2n2-attention/2 (CLS and a register dropped, features beside
# the maps) feeds M2N2 like any other archive.
expect_ok $M2N2 segment --source torchscript:$ROOT/models/tiny-vit-features.pt --image $ROOT/examples/images/kite.png \
  --click 250,110,+ --out $TMP/vit.png --no-cache
check "ViT /2 archive: a mask" /usr/bin/python3 -c "
import cv2; m = cv2.imread('$TMP/vit.png', 0); assert m is not None and 0 < (m > 0).sum() < m.size, m"
finish
