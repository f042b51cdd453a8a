#!/usr/bin/env python3
"""`m2n2 segment --export`, --resume and --shard auto through the real executable.

Every export format is decoded here from its public definition (COCO's compressed RLE
and polygons, LabelMe's polygon shapes, YOLO-seg's normalised polygons) and compared
with the PNG masks: RLE exactly, polygons with IoU >= 0.98 at the default tolerance.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coco_rle import rle_counts  # noqa: E402

M2N2, ROOT = sys.argv[1], sys.argv[2]
EX = os.path.join(ROOT, "examples")
TMP = tempfile.mkdtemp(prefix="m2n2-export-")
FAILS = []
SCHED = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
         "SLURM_ARRAY_TASK_STEP", "JOB_COMPLETION_INDEX", "M2N2_INJECT_FAULT")


def check(what, cond):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)


def run(*args, env=None, stdin=None):
    e = {k: v for k, v in os.environ.items() if k not in SCHED}
    e.update(env or {})
    quick = ["--grid", "32", "--cache-dir", os.path.join(TMP, "cache")]
    p = subprocess.run([M2N2, "segment", *args, *quick], capture_output=True, text=True, env=e, input=stdin)
    return p.returncode, p.stdout, p.stderr


def one_line_error(what, rc_want, result, pattern):
    rc, _, err = result
    lines = [l for l in err.splitlines() if l.strip()]
    check(f"{what}: exit {rc_want} (got {rc}: {err.strip()})", rc == rc_want)
    check(f"{what}: one stderr line naming '{pattern}' (got {lines})", len(lines) == 1 and pattern in lines[0])


def error_line(what, rc_want, result, pattern):
    """Exit rc_want and an error line naming pattern (the run's summary line beside it)."""
    rc, _, err = result
    errors = [l for l in err.splitlines() if "error" in l]
    check(f"{what}: exit {rc_want} (got {rc}: {err.strip()})", rc == rc_want)
    check(f"{what}: one error line naming '{pattern}' (got {errors})", len(errors) == 1 and pattern in errors[0])


def rle_decode(rle):
    h, w = rle["size"]
    flat = np.zeros(h * w, np.uint8)
    pos, v = 0, 0
    for c in rle_counts(rle["counts"]):
        flat[pos:pos + c] = v
        pos += c
        v = 1 - v
    check("RLE covers the mask", pos == h * w)
    return flat.reshape(w, h).T.astype(bool)  # column-major


def raster(rings, h, w):
    """Pixels whose centres (x+0.5, y+0.5) are inside the rings, even-odd rule."""
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = xs + 0.5, ys + 0.5
    inside = np.zeros((h, w), bool)
    for ring in rings:
        pts = np.asarray(ring, float).reshape(-1, 2)
        for (x1, y1), (x2, y2) in zip(pts, np.roll(pts, -1, axis=0)):
            if y1 == y2:
                continue
            cross = (y1 > cy) != (y2 > cy)
            xint = x1 + (cy - y1) * (x2 - x1) / (y2 - y1)
            inside ^= cross & (cx < xint)
    return inside


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


def mask_of(path):
    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    assert m is not None, path
    return m > 0


# A click file with classes: a given category id with a label, a label alone, neither.
clicks = json.load(open(os.path.join(EX, "clicks.json")))
objs = clicks["images"][0]["objects"]
objs[0].update({"category_id": 7, "label": "apple"})
objs[1]["label"] = "bottle"
clicks["images"][1]["objects"][0]["category_id"] = 7
CF = os.path.join(TMP, "clicks.json")
json.dump(clicks, open(CF, "w"))

# ---- every format, RLE in the instances file
OUT = os.path.join(TMP, "out")
rc, out, err = run("--clicks", CF, "--images", EX, "--out", OUT, "--export", "coco-results,coco-instances,labelme,yolo-seg")
check(f"export run exits 0 ({err})", rc == 0)
records = [json.loads(l) for l in out.splitlines()]
check("stdout streams one line per image", len(records) == 2)
masks = {}  # (image, id) -> mask
for r in records:
    for o in r["objects"]:
        masks[(r["image"], o["id"])] = mask_of(o["mask"])
check("records kept in OUT/segment.jsonl as on stdout",
      [json.loads(l) for l in open(os.path.join(OUT, "segment.jsonl"))] == records)
ids = json.load(open(os.path.join(OUT, "export_ids.json")))
image_id = {i["file_name"]: i["id"] for i in ids["images"]}
check("image ids number the click file's entries", image_id == {"images/fruit.png": 1, "images/kite.png": 2})
cats = {c["id"]: c["name"] for c in ids["categories"]}
check(f"categories: the given id named by its label, a new id per label, 'object' for neither ({cats})",
      cats[7] == "apple" and sorted(cats.values()) == ["apple", "bottle", "object"] and len(cats) == 3)
cat_of = {("images/fruit.png", "apple"): 7, ("images/kite.png", "kite"): 7,
          ("images/fruit.png", "bottle"): [k for k, v in cats.items() if v == "bottle"][0],
          ("images/fruit.png", "orange"): [k for k, v in cats.items() if v == "object"][0]}

res = json.load(open(os.path.join(OUT, "coco_results.json")))
check("coco_results: one entry per object", len(res) == len(masks))
for (img, oid), cat in cat_of.items():
    match = [a for a in res if a["image_id"] == image_id[img] and a["category_id"] == cat
             and np.array_equal(rle_decode(a["segmentation"]), masks[(img, oid)])]
    check(f"coco_results: {img} / {oid} decodes exactly to its PNG with its ids", len(match) == 1)
for a in res:
    m = rle_decode(a["segmentation"])
    ys, xs = np.nonzero(m)
    check("coco_results: bbox", a["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)])
    check("coco_results: score", a["score"] == 1.0)

inst = json.load(open(os.path.join(OUT, "coco_instances.json")))
check("coco_instances: images with sizes", sorted((i["file_name"], i["width"], i["height"]) for i in inst["images"]) ==
      [("images/fruit.png", 480, 360), ("images/kite.png", 420, 300)])
check("coco_instances: categories as the mapping", {c["id"]: c["name"] for c in inst["categories"]} == cats)
fname = {i["id"]: i["file_name"] for i in inst["images"]}
check("coco_instances: unique annotation ids", len({a["id"] for a in inst["annotations"]}) == len(masks))
for a in inst["annotations"]:
    m = rle_decode(a["segmentation"])
    hits = [k for k, v in masks.items() if k[0] == fname[a["image_id"]] and np.array_equal(v, m)]
    check("coco_instances: RLE decodes exactly to a PNG of its image", len(hits) == 1)
    check("coco_instances: category and area", hits and a["category_id"] == cat_of[hits[0]] and a["area"] == int(m.sum()))

# LabelMe: one file per image; an object's shapes share a group id, its id in the description.
for img, stem in (("images/fruit.png", "fruit"), ("images/kite.png", "kite")):
    lm = json.load(open(os.path.join(OUT, "labelme", stem + ".json")))
    h, w = lm["imageHeight"], lm["imageWidth"]
    check("labelme: imagePath leads to the image", os.path.samefile(os.path.join(OUT, "labelme", lm["imagePath"]), os.path.join(EX, img)))
    groups = {}
    for s in lm["shapes"]:
        check("labelme: polygon shapes", s["shape_type"] == "polygon" and len(s["points"]) >= 3)
        groups.setdefault((s["group_id"], s["description"], s["label"]), []).append(s["points"])
    for (g, oid, label), rings in groups.items():
        want = masks[(img, oid)]
        got = np.zeros_like(want)
        for ring in rings:
            got |= raster([ring], h, w)
        check(f"labelme: {img} / {oid} IoU {iou(got, want):.4f} >= 0.98", iou(got, want) >= 0.98)
        check("labelme: label is the class name", label == cats[cat_of[(img, oid)]])
    check(f"labelme: every object of {img}", sorted(k[1] for k in groups) == sorted(k[1] for k in masks if k[0] == img))

# YOLO-seg: a class index per line (classes.txt line), normalised polygon, one per object.
names = open(os.path.join(OUT, "yolo", "classes.txt")).read().splitlines()
check("yolo: classes.txt lists the categories by id", names == [cats[k] for k in sorted(cats)])
for img, stem, (w, h) in (("images/fruit.png", "fruit", (480, 360)), ("images/kite.png", "kite", (420, 300))):
    lines = open(os.path.join(OUT, "yolo", stem + ".txt")).read().splitlines()
    objects = [k for k in masks if k[0] == img]
    check("yolo: one line per object", len(lines) == len(objects))
    for line in lines:
        v = line.split()
        cls, xy = int(v[0]), np.array(v[1:], float).reshape(-1, 2)
        check("yolo: normalised", xy.min() >= 0 and xy.max() <= 1)
        got = raster([xy * [w, h]], h, w)
        best = max(objects, key=lambda k: iou(got, masks[k]))
        check(f"yolo: {img} / {best[1]} IoU {iou(got, masks[best]):.4f} >= 0.98", iou(got, masks[best]) >= 0.98)
        check("yolo: class index", names[cls] == cats[cat_of[best]])

# ---- COCO polygons (holes bridged), and ids from a ground truth with string ids (as the
# reference's prepared files have them) and category 0.
gt = {"images": [{"id": "img-k", "file_name": "kite.png", "width": 420, "height": 300},
                 {"id": "img-f", "file_name": "fruit.png", "width": 480, "height": 360}],
      "categories": [{"id": 0, "name": "object"}], "annotations": []}
GT = os.path.join(TMP, "gt.json")
json.dump(gt, open(GT, "w"))
plain = json.load(open(os.path.join(EX, "clicks.json")))
PF = os.path.join(TMP, "plain.json")
json.dump(plain, open(PF, "w"))
POUT = os.path.join(TMP, "poly")
rc, out, err = run("--clicks", PF, "--images", EX, "--out", POUT, "--export", "coco-instances,coco-results", "--polygons", "--coco-gt", GT)
check(f"polygon run exits 0 ({err})", rc == 0)
check("no id mapping written when the ground truth gives the ids", not os.path.exists(os.path.join(POUT, "export_ids.json")))
inst = json.load(open(os.path.join(POUT, "coco_instances.json")))
check("ground-truth image ids by file name", sorted(i["id"] for i in inst["images"]) == ["img-f", "img-k"])
fname = {i["id"]: i["file_name"] for i in inst["images"]}
for a in inst["annotations"]:
    check("ground-truth category 0", a["category_id"] == 0)
    h, w = (360, 480) if a["image_id"] == "img-f" else (300, 420)
    got = np.zeros((h, w), bool)
    for ring in a["segmentation"]:  # COCO's loader unites a segmentation's polygons
        check("COCO polygon: even number (>= 6) of coordinates", len(ring) >= 6 and len(ring) % 2 == 0)
        got |= raster([ring], h, w)
    best = max((k for k in masks if k[0] == fname[a["image_id"]]), key=lambda k: iou(got, masks[k]))
    check(f"coco polygons: {best} IoU {iou(got, masks[best]):.4f} >= 0.98", iou(got, masks[best]) >= 0.98)
res = json.load(open(os.path.join(POUT, "coco_results.json")))
check("results take the ground truth's ids", {a["image_id"] for a in res} == {"img-f", "img-k"})

# Ids the ground truth lacks: the export fails in one line (exit 1), the masks stay.
bad = dict(gt, images=gt["images"][:1])
json.dump(bad, open(GT, "w"))
error_line("image missing from --coco-gt", 1,
               run("--clicks", PF, "--images", EX, "--out", os.path.join(TMP, "miss"), "--export", "coco-results", "--coco-gt", GT),
               "no image named images/fruit.png")
one_line_error("unknown format", 2, run("--clicks", PF, "--images", EX, "--out", os.path.join(TMP, "x"), "--export", "coco,labelme"),
               "unknown format 'coco'")
one_line_error("--polygons without --export", 2, run("--clicks", PF, "--images", EX, "--out", os.path.join(TMP, "x"), "--polygons"),
               "need --export")
error_line("bad category_id is the object's error", 1,
               run("--clicks", "-", "--images", EX, "--out", os.path.join(TMP, "y"),
                   stdin=json.dumps({"image": "images/kite.png", "objects": [{"id": "k", "category_id": -3, "clicks": [{"x": 1, "y": 1}]}]})),
               "category_id")

# ---- a shard killed mid-run, rerun with --resume: exit 0, nothing written twice.
ROUT = os.path.join(TMP, "resume")
rc, out, err = run("--clicks", PF, "--images", EX, "--out", ROUT, env={"M2N2_INJECT_FAULT": "kill@images/kite.png#kite"})
check(f"killed run dies by SIGKILL (rc {rc})", rc == -9)
first = [json.loads(l) for l in open(os.path.join(ROUT, "segment.jsonl"))]
check("the finished image was recorded before the kill", [r["image"] for r in first] == ["images/fruit.png"])
fruit_mtimes = {f: os.stat(os.path.join(ROUT, "fruit", f)).st_mtime_ns for f in os.listdir(os.path.join(ROUT, "fruit"))}
one_line_error("resume with another shard", 2, run("--clicks", PF, "--images", EX, "--out", ROUT, "--resume", "--shard", "0/2"), "shard")
rc, out, err = run("--clicks", PF, "--images", EX, "--out", ROUT, "--resume", "--export", "coco-results")
check(f"rerun with --resume exits 0 ({err})", rc == 0)
check("rerun streams only the unfinished image", [json.loads(l)["image"] for l in out.splitlines()] == ["images/kite.png"])
recs = [json.loads(l) for l in open(os.path.join(ROUT, "segment.jsonl"))]
check("each image recorded once", sorted(r["entry"] for r in recs) == [0, 1] and all(r["ok"] for r in recs))
check("finished masks not written again",
      fruit_mtimes == {f: os.stat(os.path.join(ROUT, "fruit", f)).st_mtime_ns for f in os.listdir(os.path.join(ROUT, "fruit"))})
check("exports cover the earlier run's images too", len(json.load(open(os.path.join(ROUT, "coco_results.json")))) == 4)
rc, out, err = run("--clicks", PF, "--images", EX, "--out", ROUT, "--resume")
check("a third run has nothing left to do", rc == 0 and out == "" and len(open(os.path.join(ROUT, "segment.jsonl")).readlines()) == 2)
# A mask removed since: its image is done again.
os.remove(os.path.join(ROUT, "kite", "kite.png"))
rc, out, err = run("--clicks", PF, "--images", EX, "--out", ROUT, "--resume")
check("an image whose output is gone is redone", rc == 0 and [json.loads(l)["image"] for l in out.splitlines()] == ["images/kite.png"])

# ---- --shard auto from each scheduler's variables.
def shard_images(env, *extra):
    d = tempfile.mkdtemp(dir=TMP)
    rc, out, err = run("--clicks", PF, "--images", EX, "--out", d, "--shard", "auto", *extra, env=env)
    check(f"--shard auto {env} exits 0 ({err})", rc == 0)
    return [json.loads(l)["image"] for l in out.splitlines()]

check("SLURM id/count", shard_images({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}) == ["images/kite.png"])
check("SLURM min/max", shard_images({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_MAX": "5"}) == ["images/fruit.png"])
check("Kubernetes", shard_images({"JOB_COMPLETION_INDEX": "1"}, "--shard-count", "2") == ["images/kite.png"])
X = os.path.join(TMP, "never")
one_line_error("no scheduler", 2, run("--clicks", PF, "--out", X, "--shard", "auto"), "no scheduler index")
one_line_error("index past count", 2, run("--clicks", PF, "--out", X, "--shard", "auto",
                                          env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2"}), "not in 0..1")
one_line_error("count and max disagree", 2, run("--clicks", PF, "--out", X, "--shard", "auto",
                                                env={"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MAX": "1"}),
               "disagrees")
one_line_error("Kubernetes without --shard-count", 2, run("--clicks", PF, "--out", X, "--shard", "auto",
                                                          env={"JOB_COMPLETION_INDEX": "0"}), "--shard-count")
one_line_error("not a number", 2, run("--clicks", PF, "--out", X, "--shard", "auto", env={"SLURM_ARRAY_TASK_ID": "1x"}), "whole number")
check("nothing written by refused runs", not os.path.exists(X))

shutil.rmtree(TMP, ignore_errors=True)
print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
