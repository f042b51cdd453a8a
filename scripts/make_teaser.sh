#!/bin/bash
# Regenerates docs/teaser.png from the shipped examples with the default source.
set -euo pipefail
cd "$(dirname "$0")/.."
M2N2=${M2N2:-build/m2n2}
t=$(mktemp -d)
$M2N2 segment --clicks examples/clicks.json --out $t/seg --overwrite -q > $t/seg.jsonl
$M2N2 auto --method diffseg --image examples/images/kite.png --out $t/ds.png --vis $t/ds_vis.png -q > /dev/null
$M2N2 auto --method ncut --image examples/images/fruit.png --out $t/nc.png --vis $t/nc_vis.png -q > /dev/null
/usr/bin/python3 - $t <<'PY'
import json, sys, cv2, numpy as np
t = sys.argv[1]
clicks = json.load(open("examples/clicks.json"))
panels = []
for entry in clicks["images"]:
    img = cv2.imread("examples/" + entry["image"])
    stem = entry["image"].split("/")[-1].rsplit(".", 1)[0]
    colours = [(255, 144, 30), (60, 200, 255), (200, 80, 255)]
    out = img.astype(np.float32)
    for k, obj in enumerate(entry["objects"]):
        m = cv2.imread(f"{t}/seg/{stem}/{obj['id']}.png", 0) > 0
        out[m] = 0.45 * out[m] + 0.55 * np.array(colours[k % 3], np.float32)
        cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, cnts, -1, (255, 255, 255), 1)
    out = out.astype(np.uint8)
    for obj in entry["objects"]:
        for c in obj["clicks"]:
            col = (40, 200, 40) if c.get("positive", True) else (40, 40, 220)
            cv2.circle(out, (int(c["x"]), int(c["y"])), 6, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, (int(c["x"]), int(c["y"])), 5, col, -1, cv2.LINE_AA)
    panels.append(out)
panels.append(cv2.imread(f"{t}/ds_vis.png"))
panels.append(cv2.imread(f"{t}/nc_vis.png"))
h = 240
row = [cv2.resize(p, (int(p.shape[1] * h / p.shape[0]), h), interpolation=cv2.INTER_AREA) for p in panels]
sep = np.full((h, 6, 3), 255, np.uint8)
out = row[0]
for p in row[1:]:
    out = np.hstack([out, sep, p])
cv2.imwrite("docs/teaser.png", out)
print("docs/teaser.png", out.shape)
PY
rm -rf "$t"
