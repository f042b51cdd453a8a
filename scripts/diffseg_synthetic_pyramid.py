#!/usr/bin/env python3
"""A synthetic 4-level attention pyramid (grids 64, 32, 16, 8; three flat regions; maps of
random sharpness, the sharpest far below float16's range) aggregated as DiffSeg does (spec
diffseg.md §3: keys bilinearly upsampled to 64, renormalised, queries replicated, weights
8:4:2:1 / 15), written as one (4096, 4096) float32 .npy for `m2n2 auto --source file:`.

  python3 scripts/diffseg_synthetic_pyramid.py OUT.npy [SEED]
"""
import sys

import cv2
import numpy as np


def level(grid, rng):
    ys, xs = np.mgrid[0:grid, 0:grid]
    region = np.where(xs < grid // 2, 0, np.where(ys < grid // 2, 1, 2)).ravel()
    pos = np.stack([ys.ravel(), xs.ravel()], 1) / grid
    n = grid * grid
    d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    sharp = rng.uniform(0.2, 2.4, (n, 1)) * grid / 8  # finer grids: sharper maps
    logits = 3.0 * (region[:, None] == region[None, :]) - sharp * d2 * 4 + rng.normal(0, 0.5, (n, n))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    R = 64
    A = np.zeros((R * R, R * R), np.float64)
    for s in (64, 32, 16, 8):
        m = level(s, rng)
        d = R // s
        keys = np.stack([cv2.resize(m[q].reshape(s, s), (R, R), interpolation=cv2.INTER_LINEAR) for q in range(s * s)])
        keys = keys.reshape(s * s, -1)
        keys /= keys.sum(1, keepdims=True)
        q = (np.arange(R)[:, None] // d) * s + (np.arange(R)[None, :] // d)
        A += keys[q.ravel()] * (s / 120.0)
    np.save(out, A.astype(np.float32))


if __name__ == "__main__":
    main()
