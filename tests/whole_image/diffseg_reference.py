#!/usr/bin/env python3
"""NumPy port of DiffSeg's merging (spec diffseg.md §4-§8) for parity tests.

Writes a synthetic single-resolution attention tensor and the reference's results on it:
  python3 diffseg_reference.py OUT_DIR GRID ANCHORS SEED
OUT_DIR/A.npy       (N, N) float32 row-stochastic maps (flat regions, sharp rows underflow in fp16)
OUT_DIR/D.npy       (K, N) float32 iteration-0 divergences in float16 arithmetic (NaN kept)
OUT_DIR/P0.npy      (K, N) float32 iteration-0 proposals (NaN rows: anchors that match nothing)
OUT_DIR/labels.npy  (GRID, GRID) int32 raw labels after three iterations at τ = 1.1, at grid size
OUT_DIR/info.json   underflowing maps, pairs whose float16 divergence is 1.0996 (matched in
                    float64, not in float16), proposal count
Iteration 0 follows the reference's casts: inputs, logs, quotient and products in float16 (NumPy
rounds each float16 operation's float result to nearest even); the sums run in float32 in eight
interleaved lanes (element i in lane i mod 8, lanes added in order), the order m2n2 documents for
TensorFlow's unspecified one. Later iterations: float64 greedy merging, as the reference.
"""
import json
import sys

import numpy as np


def synthetic(grid, seed):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:grid, 0:grid]
    region = np.where(xs < grid // 2, 0, np.where(ys < grid // 2, 1, 2)).ravel()
    pos = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float64) / grid
    n = grid * grid
    A = np.empty((n, n), np.float64)
    for p in range(n):
        d2 = ((pos - pos[p]) ** 2).sum(1)
        sharp = rng.uniform(0.2, 2.4)  # the sharpest rows have entries far below fp16's range
        logits = 3.0 * (region == region[p]) - sharp * d2 * 4 + rng.normal(0, 0.5, n)
        e = np.exp(logits - logits.max())
        A[p] = e / e.sum()
    return A.astype(np.float32)


def anchor_coordinates(M, R):
    seg = (R - 1) // (M - 1)
    total = seg * (M - 1)
    start = (R - 1 - total) // 2
    return np.linspace(start, start + total, M).astype(int)


def lane_sum(v):
    """float32 sum of the float16 rows of v in the documented order -> float16."""
    rows, n = v.shape
    pad = (-n) % 8
    w = np.concatenate([v.astype(np.float32), np.zeros((rows, pad), np.float32)], 1)
    lanes = np.cumsum(w.reshape(rows, -1, 8), axis=1, dtype=np.float32)[:, -1, :]
    return np.cumsum(lanes, axis=1, dtype=np.float32)[:, -1].astype(np.float16)


def kl16(x, Y):
    x16, Y16 = x.astype(np.float16), Y.astype(np.float16)
    q = np.log(x16)[None, :] - np.log(Y16)
    k1 = lane_sum(x16[None, :] * q) / np.float16(2)
    k2 = -lane_sum(Y16 * q) / np.float16(2)
    return k1 + k2  # float16 throughout


def kl64(x, y):
    q = np.log(x) - np.log(y)
    return (x * q).sum(-1) / 2 - (y * q).sum(-1) / 2


def main():
    out, grid, M, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    A = synthetic(grid, seed)
    np.save(out + "/A.npy", A)
    c = anchor_coordinates(M, grid)
    anchors = [y * grid + x for y in c for x in c]
    tau = [1.1, 1.1, 1.1]
    with np.errstate(all="ignore"):
        D = np.stack([kl16(A[a], A) for a in anchors])
        b = (D < np.float16(tau[0])).astype(np.float64)
        P = (b @ A.astype(np.float64)) / b.sum(1, keepdims=True)
        np.save(out + "/D.npy", D.astype(np.float32))
        np.save(out + "/P0.npy", P.astype(np.float32))
        props = list(P)
        for t in tau[1:]:
            matched, new = set(), []
            for i, a in enumerate(props):
                if i in matched:
                    continue
                matched.add(i)
                sel = [k for k in range(len(props)) if kl64(a, props[k]) < t]
                if sel:
                    matched.update(sel)
                    new.append(np.mean([props[k] for k in sel], 0))
            props = new
        labels = np.argmax(np.stack(props), 0).reshape(grid, grid).astype(np.int32)
    np.save(out + "/labels.npy", labels)
    info = {
        "underflow_maps": int((A.astype(np.float16) == 0).any(1).sum()),
        "at_rounded_threshold": int((D == np.float16(1.1)).sum()),
        "proposals": len(props),
    }
    json.dump(info, open(out + "/info.json", "w"))


if __name__ == "__main__":
    main()
