#!/usr/bin/env python3
"""Writes small made-up datasets for the eval tests: a GrabCut-style folder (with a
void band), a DAVIS-style folder and a COCO JSON (one RLE, one polygon annotation)."""
import json
import os
import sys

import cv2
import numpy as np

out = sys.argv[1]
rng = np.random.default_rng(0)


def scene(i):
    h, w = 72 + 8 * i, 96
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40 + 30 * i, 120, 60)
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (30 + 10 * i, 36), (18, 14), 10 * i, 0, 360, 255, -1)
    img[m > 0] = (200, 60 + 20 * i, 40)
    img = np.clip(img.astype(np.int16) + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, m


for kind in ("grabcut", "davis"):
    os.makedirs(f"{out}/{kind}/images", exist_ok=True)
    os.makedirs(f"{out}/{kind}/masks", exist_ok=True)
for i in range(3):
    img, m = scene(i)
    cv2.imwrite(f"{out}/grabcut/images/s{i}.png", img)
    g = m.copy()
    band = cv2.dilate(m, np.ones((5, 5), np.uint8)) - cv2.erode(m, np.ones((5, 5), np.uint8))
    g[band > 0] = 128
    cv2.imwrite(f"{out}/grabcut/masks/s{i}.png", g)
    cv2.imwrite(f"{out}/davis/images/d{i}.jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(f"{out}/davis/masks/d{i}.png", (m > 0).astype(np.uint8) * (i + 1))

# COCO: two images; annotation 1 as uncompressed RLE, annotation 2 as a polygon.
os.makedirs(f"{out}/coco/imgs", exist_ok=True)
img0, m0 = scene(0)
img1, _ = scene(1)
cv2.imwrite(f"{out}/coco/imgs/a.png", img0)
cv2.imwrite(f"{out}/coco/imgs/b.png", img1)
flat = (m0 > 0).T.reshape(-1).astype(np.uint8)  # column-major
counts, cur, run = [], 0, 0
for v in flat:
    if v != cur:
        counts.append(run); run = 0; cur = v
    run += 1
counts.append(run)
coco = {
    "images": [{"id": 1, "file_name": "a.png", "height": img0.shape[0], "width": img0.shape[1]},
               {"id": 2, "file_name": "b.png", "height": img1.shape[0], "width": img1.shape[1]}],
    "annotations": [
        {"id": 10, "image_id": 1, "segmentation": {"size": list(m0.shape), "counts": counts}},
        {"id": 11, "image_id": 2, "segmentation": [[20, 20, 60, 22, 58, 60, 22, 58]]}],
}
json.dump(coco, open(f"{out}/coco/instances.json", "w"))

# COCO with one image's annotations interleaved with another's (ids 20..23): eval must
# still compute each image's attention once, and shard by image.
inter = {
    "images": coco["images"],
    "annotations": [
        {"id": 20, "image_id": 1, "segmentation": {"size": list(m0.shape), "counts": counts}},
        {"id": 21, "image_id": 2, "segmentation": [[20, 20, 60, 22, 58, 60, 22, 58]]},
        {"id": 22, "image_id": 1, "segmentation": [[10, 10, 40, 10, 40, 40, 10, 40]]},
        {"id": 23, "image_id": 2, "segmentation": [[30, 30, 50, 30, 50, 50, 30, 50]]}],
}
json.dump(inter, open(f"{out}/coco/interleaved.json", "w"))
