#!/usr/bin/env python3
"""Masks, label maps and photos read as their format means (issue 41, input side):
palette PNGs (VOC and DAVIS-2017 palettes) by index through next-click, eval and
eval-auto; VOC-layout eval-auto figure; labels >= --classes refused; EXIF orientation 6."""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

exe, root = os.path.abspath(sys.argv[1]), sys.argv[2]
tmp = tempfile.mkdtemp(prefix="m2n2-formats-")
fails = []
Q = ["--grid", "16", "--no-cache", "-q"]


def run(*args):
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what)


def voc_palette():
    """PASCAL VOC's colour map (DAVIS 2017 uses the same one): bit-interleaved index."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


PAL = voc_palette()
assert PAL[3:6] == [128, 0, 0] and PAL[15 * 3:16 * 3] == [192, 128, 128]


def save_palette(path, idx, bits=8):
    im = Image.fromarray(idx.astype(np.uint8), mode="P")
    im.putpalette(PAL if bits == 8 else PAL[:3 << bits])
    im.save(path, bits=bits) if bits < 8 else im.save(path)
    assert Image.open(path).mode == "P"


def scene(i, h=64, w=80):
    yy, xx = np.mgrid[:h, :w]
    obj = ((yy - 30) ** 2 / 15 ** 2 + (xx - 34 - 4 * i) ** 2 / 20 ** 2) <= 1
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40 + 30 * i, 120, 60)
    img[obj] = (200, 60 + 20 * i, 40)
    rng = np.random.default_rng(i)
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    band = obj ^ np.pad(obj, 2)[4:, 2:-2]  # a void strip under the object's lower edge
    return img, obj, band


# ---- next-click: the object at palette index 1 (VOC colour (128,0,0)) must not vanish.
img, obj, band = scene(0)
gt = np.where(obj, 1, 0)
save_palette(f"{tmp}/gt_voc.png", gt)
save_palette(f"{tmp}/gt_davis.png", gt, bits=4)  # DAVIS-2017 style: few colours, packed samples
Image.fromarray(np.where(obj, 255, 0).astype(np.uint8)).save(f"{tmp}/gt_gray.png")
Image.fromarray(np.zeros(obj.shape, np.uint8)).save(f"{tmp}/pred.png")
want = run("next-click", "--gt", f"{tmp}/gt_gray.png", "--pred", f"{tmp}/pred.png")
check(want.returncode == 0, f"next-click on grayscale: {want.stderr}")
w = json.loads(want.stdout)
check(w["positive"] and obj[w["y"], w["x"]], f"grayscale click inside the object: {w}")
for name in ("gt_voc", "gt_davis"):
    got = run("next-click", "--gt", f"{tmp}/{name}.png", "--pred", f"{tmp}/pred.png")
    check(got.returncode == 0 and json.loads(got.stdout) == w, f"next-click {name}: {got.stdout} {got.stderr}, want {w}")
# Palette void (255) is left out of ritm's clicks, like a --void mask.
gtv = np.where(obj, 1, 0)
gtv[obj & (np.arange(obj.shape[1])[None, :] < 34)] = 255  # the left half of the object is void
save_palette(f"{tmp}/gt_void.png", gtv)
Image.fromarray(np.where(gtv == 1, 255, 0).astype(np.uint8)).save(f"{tmp}/gt_void_fg.png")
Image.fromarray(np.where(gtv == 255, 255, 0).astype(np.uint8)).save(f"{tmp}/void.png")
a = run("next-click", "--gt", f"{tmp}/gt_void.png", "--pred", f"{tmp}/pred.png", "--protocol", "ritm")
b = run("next-click", "--gt", f"{tmp}/gt_void_fg.png", "--pred", f"{tmp}/pred.png", "--void", f"{tmp}/void.png",
        "--protocol", "ritm")
check(a.returncode == 0 and a.stdout == b.stdout, f"ritm palette void = --void mask: {a.stdout} vs {b.stdout}")

# ---- eval: a palette GT folder gives the metrics of the same masks in grayscale.
for kind in ("pal", "gray"):
    os.makedirs(f"{tmp}/{kind}/images")
    os.makedirs(f"{tmp}/{kind}/masks")
for i in range(2):
    img, obj, band = scene(i)
    for kind in ("pal", "gray"):
        Image.fromarray(img).save(f"{tmp}/{kind}/images/s{i}.png")
    save_palette(f"{tmp}/pal/masks/s{i}.png", np.where(band, 255, np.where(obj, 1 + 13 * i, 0)))
    Image.fromarray(np.where(band, 128, np.where(obj, 255, 0)).astype(np.uint8)).save(f"{tmp}/gray/masks/s{i}.png")
res = {}
for kind in ("pal", "gray"):
    r = run("eval", "--dataset", f"{tmp}/{kind}", "--out", f"{tmp}/ev_{kind}", "--max-clicks", "3", *Q)
    check(r.returncode == 0, f"eval {kind}: {r.stderr}")
    if r.returncode == 0:
        m = json.load(open(f"{tmp}/ev_{kind}/metrics.json"))
        res[kind] = (m.get("miou_curve") or m.get("mIoU_curve") or m.get("NoC")), open(f"{tmp}/ev_{kind}/instances.csv").read()
check(len(res) == 2 and res["pal"] == res["gray"], "eval: palette masks score as their grayscale twins")
# The DAVIS convention (>0 object) does not make palette void an object either.
r = run("eval", "--dataset", f"{tmp}/pal", "--mask-format", "davis", "--out", f"{tmp}/ev_pal_davis", "--max-clicks", "3", *Q)
check(r.returncode == 0 and open(f"{tmp}/ev_pal_davis/instances.csv").read() == res.get("gray", (0, ""))[1],
      f"eval --mask-format davis on palette masks: {r.stderr}")

# ---- eval-auto: a VOC-layout set, the documented command, a figure worked out by hand.
voc = f"{tmp}/VOC2012/SegmentationClass"
os.makedirs(voc)
os.makedirs(f"{tmp}/lc")
counts = {"n0": 0, "n1": 0, "n15": 0, "k": 0}
for i in range(2):
    g = np.zeros((40, 60), np.int64)
    g[5:20, 5:25] = 1
    g[22:38, 30:58] = 15
    g[0:3, :] = 255  # void border, as VOC draws around objects
    p = np.full(g.shape, 7, np.uint16)  # auto's labels: arbitrary ids, 16-bit
    p[g == 1] = 3
    p[g == 15] = 9
    p[g == 255] = 3  # void: never scored
    p[22:38, 30:30 + 4 * (i + 1)] = 7  # some of class 15 taken for background
    save_palette(f"{voc}/2007_00000{i}.png", g)
    Image.fromarray(p).save(f"{tmp}/lc/2007_00000{i}.png")
    k = 16 * 4 * (i + 1)
    counts["n0"] += int((g == 0).sum())
    counts["n1"] += int((g == 1).sum())
    counts["n15"] += int((g == 15).sum())
    counts["k"] += k
iou0 = counts["n0"] / (counts["n0"] + counts["k"])
iou15 = (counts["n15"] - counts["k"]) / counts["n15"]
want_miou = (iou0 + 1.0 + iou15) / 3
want_acc = (counts["n0"] + counts["n1"] + counts["n15"] - counts["k"]) / (counts["n0"] + counts["n1"] + counts["n15"])
r = subprocess.run([exe, "eval-auto", "--pred", "lc/", "--gt", "VOC2012/SegmentationClass", "--classes", "21",
                    "--matching", "dataset"], capture_output=True, text=True, cwd=tmp)
check(r.returncode == 0, f"eval-auto VOC layout: {r.stderr}")
if r.returncode == 0:
    m = json.loads(r.stdout)
    check(abs(m["mIoU"] - want_miou) < 1e-9, f"VOC mIoU {m['mIoU']}, want {want_miou}")
    check(abs(m["pixel_accuracy"] - want_acc) < 1e-9, f"VOC pixel accuracy {m['pixel_accuracy']}, want {want_acc}")
    check(m["iou_per_class"][1] == 1.0 and m["iou_per_class"][15] is not None, f"classes 1 and 15 scored: {m}")
# Per-image matching: every class found, mIoU as computed for each image's own assignment.
r = run("eval-auto", "--pred", f"{tmp}/lc", "--gt", voc, "--classes", "21")
check(r.returncode == 0 and json.loads(r.stdout)["iou_per_class"][15] is not None, f"eval-auto image matching: {r.stdout}")
# A label at or above --classes is an error naming the file and the value.
r = run("eval-auto", "--pred", f"{tmp}/lc", "--gt", voc, "--classes", "10")
check(r.returncode != 0 and "2007_000000.png" in r.stderr and "15" in r.stderr, f"label 15 >= --classes 10: {r.stderr}")
# 16-bit grayscale ground truth by value (not scaled to 8 bits).
gdir = f"{tmp}/gt16"
os.makedirs(gdir)
g16 = np.zeros((20, 20), np.uint16)
g16[:, 10:] = 300
Image.fromarray(g16).save(f"{gdir}/a.png")
os.makedirs(f"{tmp}/p16")
Image.fromarray((g16 > 0).astype(np.uint8)).save(f"{tmp}/p16/a.png")
r = run("eval-auto", "--pred", f"{tmp}/p16", "--gt", gdir, "--classes", "301")
check(r.returncode == 0 and json.loads(r.stdout)["iou_per_class"][300] == 1.0, f"16-bit label 300: {r.stdout} {r.stderr}")

# ---- EXIF orientation 6: clicks and masks refer to the photo as shown (apply), or the stored grid (ignore).
stored = np.zeros((24, 40, 3), np.uint8)  # 40 wide, 24 high as stored
stored[:] = (30, 90, 40)
stored[2:12, 2:14] = (220, 40, 40)  # stored top-left; shown (rotated 90 degrees clockwise) top-right
ex = Image.Exif()
ex[0x0112] = 6
Image.fromarray(stored).save(f"{tmp}/photo.jpg", exif=ex.tobytes(), quality=95)
r = run("segment", "--image", f"{tmp}/photo.jpg", "--click", "16,6,+", "--out", f"{tmp}/shown.png", *Q)
check(r.returncode == 0, f"segment on an EXIF-6 JPEG: {r.stderr}")
if r.returncode == 0:
    m = np.array(Image.open(f"{tmp}/shown.png"))
    check(m.shape == (40, 24) and m[6, 16] > 0 and m[30, 5] == 0, f"mask in the shown orientation: {m.shape}")
r = run("segment", "--image", f"{tmp}/photo.jpg", "--click", "6,6,+", "--out", f"{tmp}/raw.png", "--exif", "ignore", *Q)
check(r.returncode == 0 and np.array(Image.open(f"{tmp}/raw.png")).shape == (24, 40), f"--exif ignore: {r.stderr}")
# serve: the image it sends (and segments) follows the same rule.
os.makedirs(f"{tmp}/srv")
os.link(f"{tmp}/photo.jpg", f"{tmp}/srv/photo.jpg")
with open(f"{tmp}/token", "w") as tf:
    tf.write("exif-test-token-0123456789\n")
for mode, want_size in (("apply", ("24", "40")), ("ignore", ("40", "24"))):
    log = open(f"{tmp}/serve_{mode}.log", "w+")
    proc = subprocess.Popen([exe, "serve", "--images", f"{tmp}/srv", "--out", f"{tmp}/srv_out_{mode}", "--port", "0",
                             "--exif", mode, "--grid", "16", "--no-cache", "--token-file", f"{tmp}/token"],
                            stdout=subprocess.DEVNULL, stderr=log)
    port, deadline = None, time.monotonic() + 60
    while port is None and time.monotonic() < deadline and proc.poll() is None:
        log.flush()
        for line in open(log.name).read().splitlines():
            if "serving on http://127.0.0.1:" in line:
                port = int(line.split("serving on http://127.0.0.1:", 1)[1].split("/")[0])
        time.sleep(0.1)
    got = None
    if port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/api/image?name=photo.jpg", headers={"Authorization": "Bearer exif-test-token-0123456789"})
        resp = conn.getresponse()
        resp.read()
        got = (resp.getheader("X-Image-Width"), resp.getheader("X-Image-Height"))
        conn.close()
    proc.terminate()
    proc.wait(timeout=30)
    check(got == want_size, f"serve --exif {mode}: image {got}, want {want_size}")
# eval: the mask is drawn on the shown photo; with --exif ignore the sizes disagree.
os.makedirs(f"{tmp}/ex/images")
os.makedirs(f"{tmp}/ex/masks")
os.link(f"{tmp}/photo.jpg", f"{tmp}/ex/images/p.jpg")
shown_obj = np.zeros((40, 24), np.uint8)
shown_obj[2:14, 12:22] = 255
Image.fromarray(shown_obj).save(f"{tmp}/ex/masks/p.png")
r = run("eval", "--dataset", f"{tmp}/ex", "--out", f"{tmp}/ev_ex", "--max-clicks", "2", *Q)
check(r.returncode == 0, f"eval on the shown photo: {r.stderr}")
r = run("eval", "--dataset", f"{tmp}/ex", "--out", f"{tmp}/ev_ex_raw", "--max-clicks", "2", "--exif", "ignore", *Q)
check(r.returncode == 1 and "size" in r.stderr, f"eval --exif ignore: mask size differs: {r.returncode} {r.stderr}")
r = run("segment", "--image", f"{tmp}/photo.jpg", "--click", "6,6,+", "--out", f"{tmp}/x.png", "--exif", "sideways", *Q)
check(r.returncode == 2, f"--exif sideways is a usage error: {r.returncode}")


# ---- The reference's prepared COCO files: string ids, category 0, images beside the file.
ref = f"{tmp}/refcoco"
os.makedirs(ref)
images, anns = [], []
for i in range(2):
    img, obj, band = scene(i)
    Image.fromarray(img).save(f"{ref}/im{i}.png")
    images.append({"id": f"img_{i}", "file_name": f"im{i}.png", "height": obj.shape[0], "width": obj.shape[1]})
    ys, xs = np.nonzero(obj)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    anns.append({"id": f"img_{i}_0", "image_id": f"img_{i}", "category_id": 0, "iscrowd": 0,
                 "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
json.dump({"images": images, "annotations": anns, "categories": [{"id": 0, "name": "object"}]},
          open(f"{ref}/grabcut.json", "w"))
r = run("eval", "--dataset", f"{ref}/grabcut.json", "--out", f"{tmp}/ev_ref", "--max-clicks", "2", *Q)
check(r.returncode == 0, f"eval on a reference-style COCO file: {r.returncode} {r.stderr}")
if r.returncode == 0:
    ids = [l.split(",")[0] for l in open(f"{tmp}/ev_ref/instances.csv").read().splitlines()[1:]]
    check(ids == ["img_0_0", "img_1_0"], f"string annotation ids kept: {ids}")
bad = {"images": [{"id": "a,b", "file_name": "im0.png", "height": 4, "width": 4}], "annotations": []}
json.dump(bad, open(f"{ref}/bad.json", "w"))
r = run("eval", "--dataset", f"{ref}/bad.json", "--out", f"{tmp}/ev_bad", *Q)
check(r.returncode == 2 and "printable" in r.stderr and r.stderr.count("\n") == 1, f"id with a comma refused: {r.stderr}")

# ---- RITM's folder names: GrabCut data_GT/boundary_GT (bmp masks), DAVIS/Berkeley img/gt.
for layout, (a, b, ext) in {"ritm_grabcut": ("data_GT", "boundary_GT", "bmp"), "ritm_davis": ("img", "gt", "png")}.items():
    os.makedirs(f"{tmp}/{layout}/{a}")
    os.makedirs(f"{tmp}/{layout}/{b}")
    for i in range(2):
        img, obj, band = scene(i)
        Image.fromarray(img).save(f"{tmp}/{layout}/{a}/s{i}.png")
        Image.fromarray(np.where(band, 128, np.where(obj, 255, 0)).astype(np.uint8)).save(f"{tmp}/{layout}/{b}/s{i}.{ext}")
    r = run("eval", "--dataset", f"{tmp}/{layout}", "--out", f"{tmp}/ev_{layout}", "--max-clicks", "3", *Q)
    check(r.returncode == 0 and open(f"{tmp}/ev_{layout}/instances.csv").read() == res.get("gray", (0, ""))[1],
          f"eval on RITM layout {layout}: {r.stderr}")

# ---- --subset N --seed S: numpy.random.seed(S); numpy.random.permutation(n)[:N] of the sorted instances.
sub = f"{tmp}/subset"
os.makedirs(f"{sub}/images")
os.makedirs(f"{sub}/masks")
img, obj, band = scene(0, 32, 40)
for i in range(7):
    Image.fromarray(img).save(f"{sub}/images/n{i}.png")
    Image.fromarray(np.where(obj, 255, 0).astype(np.uint8)).save(f"{sub}/masks/n{i}.png")
for seed in (2024, 7):
    np.random.seed(seed)
    want_ids = sorted(f"n{k}" for k in np.random.permutation(7)[:3])
    r = run("eval", "--dataset", sub, "--subset", "3", "--seed", str(seed), "--out", f"{tmp}/ev_sub{seed}",
            "--max-clicks", "1", *Q)
    got_ids = [l.split(",")[0] for l in open(f"{tmp}/ev_sub{seed}/instances.csv").read().splitlines()[1:]] \
        if r.returncode == 0 else r.stderr
    check(got_ids == want_ids, f"--subset 3 --seed {seed}: {got_ids}, want {want_ids}")

# ---- A COCO polygon of 500k vertices is refused at once, in one line; the batch goes on.
big = {"images": [{"id": 1, "file_name": "im0.png", "height": 64, "width": 80},
                  {"id": 2, "file_name": "im1.png", "height": 64, "width": 80}],
       "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                        "segmentation": [[v for k in range(500000) for v in (k % 80, (k * 7) % 64)]]},
                       {"id": 2, "image_id": 2, "category_id": 1, "segmentation": anns[1]["segmentation"]}]}
json.dump(big, open(f"{ref}/big.json", "w"))
try:
    r = subprocess.run([exe, "eval", "--dataset", f"{ref}/big.json", "--out", f"{tmp}/ev_big", "--max-clicks", "1", *Q],
                       capture_output=True, text=True, timeout=120)
    errs = [l for l in r.stderr.splitlines() if "error" in l]
    check(r.returncode == 1 and len(errs) == 1 and "vertices" in errs[0], f"500k-vertex polygon: {r.stderr}")
except subprocess.TimeoutExpired:
    check(False, "500k-vertex polygon: eval still filling after 120 s")

# A polygon under the vertex cap whose edges sweep a tall image again and again (the fill's
# cost grows with edges x rows) is refused too, before any fill.
zig = [v for k in range(60000) for v in ((k * 13) % 4000, 0 if k % 2 else 3999)]
sweep = {"images": [{"id": 1, "file_name": "im0.png", "height": 4000, "width": 4000}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [zig]}]}
json.dump(sweep, open(f"{ref}/sweep.json", "w"))
try:
    r = subprocess.run([exe, "eval", "--dataset", f"{ref}/sweep.json", "--out", f"{tmp}/ev_sweep", "--max-clicks", "1", *Q],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode != 0 and "scanlines" in r.stderr, f"sweeping polygon: {r.returncode} {r.stderr}")
except subprocess.TimeoutExpired:
    check(False, "sweeping polygon: eval still filling after 120 s")

# ---- Attention cache: damaged entries are misses, rewritten with a warning; FIFOs not read; 0700/0600.
cache = f"{tmp}/cache"
img, obj, band = scene(1, 48, 80)
Image.fromarray(img).save(f"{tmp}/c.png")
seg = ["segment", "--image", f"{tmp}/c.png", "--click", "30,30,+", "--grid", "16", "--cache-dir", cache]
r = run(*seg, "--out", f"{tmp}/c0.png")
check(r.returncode == 0, f"segment with a cache: {r.stderr}")
mask0 = open(f"{tmp}/c0.png", "rb").read() if r.returncode == 0 else b""
check(os.stat(cache).st_mode & 0o777 == 0o700, f"cache folder mode {oct(os.stat(cache).st_mode)}")
files = sorted(os.listdir(cache))
check(files and all(os.stat(f"{cache}/{f}").st_mode & 0o777 == 0o600 for f in files), f"cache file modes: {files}")
idx = [f for f in files if f.endswith(".txt")]
maps = [f for f in files if f.endswith("_0.npy")]


def rerun(tag, want_warning):
    r = run(*seg, "--out", f"{tmp}/c_{tag}.png")
    ok = r.returncode == 0 and open(f"{tmp}/c_{tag}.png", "rb").read() == mask0
    check(ok and (("damaged" in r.stderr) == want_warning), f"cache {tag}: rc {r.returncode} {r.stderr}")


if idx and maps:
    rerun("hit", False)
    raw = bytearray(open(f"{cache}/{maps[0]}", "rb").read())
    raw[-2:] = b"\x00\x7e"  # the last value a float16 NaN
    open(f"{cache}/{maps[0]}", "wb").write(raw)
    rerun("nan", True)
    rerun("rewritten", False)
    text = open(f"{cache}/{idx[0]}").read().splitlines()
    name, h, w, wt = text[1].split()
    g2 = int(h) * int(w)
    text[1] = " ".join([name, str(int(h) // 2), str(int(w) * 2), wt])  # another grid of the same size
    check((int(h) // 2) * (int(w) * 2) == g2, "the same number of tokens")
    open(f"{cache}/{idx[0]}", "w").write("\n".join(text) + "\n")
    rerun("swapped", True)
    os.remove(f"{cache}/{maps[0]}")
    os.mkfifo(f"{cache}/{maps[0]}")
    try:
        rerun("fifo", True)
    except subprocess.TimeoutExpired:
        check(False, "a FIFO in the cache hangs the run")

print(f"{len(fails)} failed")
sys.exit(1 if fails else 0)
