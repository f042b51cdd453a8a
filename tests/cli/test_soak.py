#!/usr/bin/env python3
"""Soak: one `m2n2 segment --clicks -` process serves 1000 JSON Lines requests; its
resident memory must stay flat (after warm-up, growth under 10 % + 16 MiB)."""
import json
import os
import random
import subprocess
import sys
import tempfile

import cv2

exe, root = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
tmp = tempfile.mkdtemp(prefix="m2n2-soak-")
for name in ("fruit", "kite"):
    img = cv2.imread(f"{root}/examples/images/{name}.png")
    cv2.imwrite(f"{tmp}/{name}.png", cv2.resize(img, (160, 120), interpolation=cv2.INTER_AREA))
proc = subprocess.Popen([exe, "segment", "--clicks", "-", "--images", tmp, "--out", f"{tmp}/out", "--overwrite",
                         "--grid", "16", "--cache-dir", f"{tmp}/cache", "-q", "--threads", "2"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def rss_kib():
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


rng = random.Random(0)
samples = {}
failures = 0
for i in range(1, n + 1):
    clicks = [{"x": rng.randrange(160), "y": rng.randrange(120), "positive": rng.random() < 0.7} for _ in range(rng.randint(1, 4))]
    req = {"image": rng.choice(["fruit.png", "kite.png"]), "objects": [{"id": f"o{i % 7}", "clicks": clicks}]}
    proc.stdin.write(json.dumps(req) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    reply = json.loads(line)
    failures += not reply["ok"] and "conflicting" not in json.dumps(reply)
    if i in (100, n // 2, n):
        samples[i] = rss_kib()
proc.stdin.close()
rc = proc.wait()
start, end = samples[100], samples[n]
print(f"soak: {n} requests, RSS after 100: {start / 1024:.1f} MiB, after {n // 2}: {samples[n // 2] / 1024:.1f} MiB, "
      f"after {n}: {end / 1024:.1f} MiB, failures {failures}, exit {rc}")
ok = end <= start * 1.10 + 16 * 1024 and failures == 0 and rc == 0
print(("1 passed, 0 failed") if ok else ("0 passed, 1 failed"))
sys.exit(0 if ok else 1)
