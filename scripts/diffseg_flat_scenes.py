#!/usr/bin/env python3
"""Synthetic scenes of flat colour regions with their label maps, for measuring which
attention of the default source DiffSeg should use (docs/whole-image.md).

  python3 scripts/diffseg_flat_scenes.py OUT_DIR [COUNT] [SEED]
writes OUT_DIR/images/sceneNN.png (RGB, 192x256, 3-5 regions: bands, blocks, a disc, mild
noise) and OUT_DIR/gt/sceneNN.png (region index per pixel).
"""
import os
import sys

import cv2
import numpy as np


def scene(rng):
    h, w = 192, 256
    gt = np.zeros((h, w), np.uint8)
    kind = rng.integers(0, 3)
    if kind == 0:  # left band, right split in two (the three-region layout)
        x = int(rng.integers(w // 3, 2 * w // 3))
        y = int(rng.integers(h // 3, 2 * h // 3))
        gt[:, x:] = 1
        gt[y:, x:] = 2
    elif kind == 1:  # vertical bands
        cuts = sorted(rng.choice(np.arange(40, w - 40), size=int(rng.integers(2, 4)), replace=False))
        for i, c in enumerate(cuts):
            gt[:, c:] = i + 1
    else:  # background, block and disc
        x0, y0 = int(rng.integers(10, w // 2)), int(rng.integers(10, h // 2))
        gt[y0:y0 + h // 3, x0:x0 + w // 3] = 1
        cv2.circle(gt, (int(rng.integers(w // 2, w - 40)), int(rng.integers(h // 2, h - 40))), int(rng.integers(20, 40)), 2, -1)
    k = int(gt.max()) + 1
    colours = rng.integers(20, 236, size=(k, 3))
    img = colours[gt].astype(np.float64) + rng.normal(0, 4, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), gt


def main():
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    os.makedirs(out + "/images", exist_ok=True)
    os.makedirs(out + "/gt", exist_ok=True)
    for i in range(count):
        img, gt = scene(rng)
        cv2.imwrite(f"{out}/images/scene{i:02d}.png", img[:, :, ::-1])
        cv2.imwrite(f"{out}/gt/scene{i:02d}.png", gt)


if __name__ == "__main__":
    main()
