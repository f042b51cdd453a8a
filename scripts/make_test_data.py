#!/usr/bin/env python3
"""Writes tests/data/: the compact copy of ../shared/testdata that the default test suite
runs on when ../shared is absent (a user's clone).

- parity/<case>/: two of the reference cases (synthetic_1_1 at grid 16, grabcut_banana1 at
  grid 32). Inputs and every per-step output are kept exactly (float32 .npy, gzip-compressed);
  of the doubly-stochastic matrix only every 8th row is kept (listed in case.json), which
  still checks the balancing entry by entry.
- clicks/: all click-simulator cases (small PNGs and clicks.json), unchanged.

Run with Debian's python3: /usr/bin/python3 scripts/make_test_data.py [--shared ../shared]
"""
import argparse
import gzip
import json
import pathlib
import shutil

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--shared", default=str(pathlib.Path(__file__).resolve().parents[1].parent / "shared"))
ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"))
a = ap.parse_args()
src, out = pathlib.Path(a.shared) / "testdata", pathlib.Path(a.out)


def save_gz(path, arr):
    import io
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr))
    # mtime=0: the same input gives the same bytes
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0) as g:
        g.write(buf.getvalue())


for name in ("synthetic_1_1", "grabcut_banana1"):
    s, d = src / "m2n2" / name, out / "parity" / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    cfg = json.load(open(s / "case.json"))
    shutil.copy(s / cfg["image"], d / cfg["image"])
    shutil.copy(s / cfg["gt"], d / cfg["gt"])
    save_gz(d / "attention.npy.gz", np.load(s / cfg["attention"]))
    cfg["attention"] = "attention.npy.gz"
    ds = np.load(s / cfg["attention_doubly_stochastic"])
    n = ds.shape[0] * ds.shape[1] if ds.ndim == 4 else ds.shape[0]
    ds = ds.reshape(n, n)
    rows = list(range(0, n, 8))
    save_gz(d / "attention_doubly_stochastic_rows.npy.gz", ds[rows])
    cfg["attention_doubly_stochastic"] = "attention_doubly_stochastic_rows.npy.gz"
    cfg["doubly_stochastic_rows"] = rows
    for st in cfg["steps"]:
        for k in ("markov_lowres", "distance"):
            save_gz(d / (st[k] + ".gz"), np.load(s / st[k]))
            st[k] += ".gz"
        shutil.copy(s / st["mask_after"], d / st["mask_after"])
    cfg["compact_copy_of"] = f"shared/testdata/m2n2/{name}"
    json.dump(cfg, open(d / "case.json", "w"), indent=1)

c = out / "clicks"
if c.exists():
    shutil.rmtree(c)
shutil.copytree(src / "clicks", c)
for p in c.rglob("*"):
    p.chmod(0o644)
total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
print(f"tests/data: {total / 1e6:.1f} MB")
