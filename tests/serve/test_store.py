#!/usr/bin/env python3
"""The annotation store of `m2n2 serve` and its caps, against the real executable.

Two images with one stem (a.png, a.jpg) get separate folders, the same in `m2n2 segment`;
a save and a delete of one object racing 300 times leave a record exactly when its mask
is there; kill -9 during saves, in a loop, leaves every mask on disk equal to what
`m2n2 segment --clicks OUT/clicks.json` gives; an image swapped for a symbolic link after
the listing is not served; too many clicks and too many pixels are one-line 422s.

    python3 tests/serve/test_store.py M2N2 SOURCE_DIR
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import cv2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_guard as g  # noqa: E402  (the same server harness)

M2N2, ROOT, TMP, check = g.M2N2, g.ROOT, g.TMP, g.check


class Client:
    def __init__(self, port, token):
        self.port, self.token = port, token

    def call(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.token}
        data = b""
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        st, _, payload = g.request(self.port, method, path, headers, data)
        return st, json.loads(payload) if payload else None

    def ready(self, image):
        self.call("POST", "/api/prepare", {"image": image})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            st, s = self.call("GET", "/api/status?image=" + image)
            if s["state"] == "ready":
                return
            check(s["state"] in ("queued", "preparing", "idle"), "preparing %s: %r" % (image, s))
            time.sleep(0.05)
        raise AssertionError("preparation of %s did not end" % image)


def segment_cli(click_file, out):
    r = subprocess.run([M2N2, "segment", "--clicks", click_file, "--out", out, "-q", "--overwrite"], env=g.ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    return r.returncode, r.stderr.decode()


def masks_under(folder):
    found = {}
    for d, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".png"):
                found[os.path.relpath(os.path.join(d, f), folder)] = os.path.join(d, f)
    return found


def same_png(a, b):
    x, y = cv2.imread(a, cv2.IMREAD_UNCHANGED), cv2.imread(b, cv2.IMREAD_UNCHANGED)
    return x is not None and y is not None and x.shape == y.shape and (x == y).all()


def main():
    images = os.path.join(TMP, "images")
    os.makedirs(images)
    small = lambda f: cv2.resize(cv2.imread(os.path.join(ROOT, "examples/images", f)), (160, 120), interpolation=cv2.INTER_AREA)
    cv2.imwrite(os.path.join(images, "a.png"), small("fruit.png"))
    cv2.imwrite(os.path.join(images, "a.jpg"), small("kite.png"), [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(os.path.join(images, "b.png"), small("kite.png"))
    cv2.imwrite(os.path.join(TMP, "outside.png"), small("fruit.png"))
    out = os.path.join(TMP, "out")
    clicks = [{"x": 60, "y": 80}, {"x": 100, "y": 70, "positive": False}]

    # ---- same stem: separate folders, the first image keeps OUT/<stem>/, segment agrees
    proc, port, token, _ = g.start(images, out, "--max-clicks", "50")
    c = Client(port, token)
    try:
        for image in ("a.png", "a.jpg"):
            c.ready(image)
            st, r = c.call("POST", "/api/save", {"image": image, "objects": [{"id": "1", "clicks": clicks}]})
            check(st == 200, "save %s: %d %r" % (image, st, r))
        check(os.path.exists(os.path.join(out, "a", "1.png")), "a.png keeps OUT/a/")
        check(os.path.exists(os.path.join(out, "a.jpg", "1.png")), "a.jpg gets OUT/a.jpg/")
        check(not same_png(os.path.join(out, "a", "1.png"), os.path.join(out, "a.jpg", "1.png")), "two different masks")
        code, err = segment_cli(os.path.join(out, "clicks.json"), os.path.join(TMP, "x0"))
        check(code == 0, "segment of the saved clicks: %d %s" % (code, err))
        for rel, path in masks_under(out).items():
            check(same_png(path, os.path.join(TMP, "x0", rel)), "segment reproduces " + rel)

        # ---- caps: distinct clicks per request
        many = [{"x": i % 160, "y": i // 160} for i in range(51)]
        st, r = c.call("POST", "/api/segment", {"image": "a.png", "clicks": many})
        check(st == 422 and "--max-clicks" in r["error"] and "\n" not in r["error"], "too many clicks: %d %r" % (st, r))
        st, r = c.call("POST", "/api/save", {"image": "a.png", "objects": [{"id": "m", "clicks": many}]})
        check(st == 422, "too many clicks to save: %d %r" % (st, r))

        # ---- save and delete of one object racing, 300 cycles: a record exactly when its mask is there
        c.ready("b.png")
        mask = os.path.join(out, "b", "r.png")
        # A delete lands at a random instant of a save (its segmentation, its writes).
        t0 = time.monotonic()
        for _ in range(3):
            c.call("POST", "/api/save", {"image": "b.png", "objects": [{"id": "r", "clicks": clicks}]})
        save_s = (time.monotonic() - t0) / 3
        rng = random.Random(3)
        bad = 0
        for cycle in range(300):
            results = {}
            delay = rng.uniform(0, 1.3 * save_s)
            save = threading.Thread(target=lambda: results.update(
                save=c.call("POST", "/api/save", {"image": "b.png", "objects": [{"id": "r", "clicks": clicks}]})[0]))
            delete = threading.Thread(target=lambda: (time.sleep(delay), results.update(
                delete=c.call("POST", "/api/delete", {"image": "b.png", "id": "r"})[0])))
            pair = [save, delete]
            [t.start() for t in pair]
            [t.join() for t in pair]
            st, r = c.call("GET", "/api/annotations?image=b.png")
            recorded = any(o["id"] == "r" for o in r["objects"])
            with open(os.path.join(out, "clicks.json")) as f:
                in_file = any(e["image"].endswith("b.png") and any(o["id"] == "r" for o in e["objects"])
                              for e in json.load(f)["images"])
            if recorded != os.path.exists(mask) or in_file != recorded:
                bad += 1
            if recorded:
                c.call("POST", "/api/delete", {"image": "b.png", "id": "r"})
        check(bad == 0, "save/delete race: %d of 300 cycles left a record and its mask apart" % bad)

        # ---- a file swapped for a symbolic link after the listing is not served
        st, _ = c.call("GET", "/api/images")
        os.remove(os.path.join(images, "a.jpg"))
        os.symlink(os.path.join(TMP, "outside.png"), os.path.join(images, "a.jpg"))
        st, r = c.call("GET", "/api/image?name=a.jpg")
        check(st == 404 and "images folder" in r["error"], "swapped symlink: %d %r" % (st, r))
        st, r = c.call("GET", "/api/thumb?name=a.jpg")
        check(st == 404, "swapped symlink thumbnail: %d" % st)
        os.remove(os.path.join(images, "a.jpg"))
        cv2.imwrite(os.path.join(images, "a.jpg"), small("kite.png"), [cv2.IMWRITE_JPEG_QUALITY, 95])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)

    # ---- --max-pixels: a one-line 422
    proc, port, token, _ = g.start(images, os.path.join(TMP, "out-px"), "--max-pixels", "10000")
    try:
        st, r = Client(port, token).call("GET", "/api/image?name=a.png")
        check(st == 422 and "\n" not in r["error"], "image over --max-pixels: %d %r" % (st, r))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)

    # ---- kill -9 during saves, in a loop: every mask on disk is what the click file gives
    rng = random.Random(7)
    kills = int(os.environ.get("M2N2_KILL_LOOPS", "6"))
    for k in range(kills):
        proc, port, token, _ = g.start(images, out)
        c = Client(port, token)
        c.ready("b.png")
        stop = threading.Event()

        def saver():
            i = 0
            while not stop.is_set():
                i += 1
                pts = [{"x": rng.randrange(160), "y": rng.randrange(120)} for _ in range(1 + i % 3)]
                try:
                    if i % 4 == 0:
                        c.call("POST", "/api/delete", {"image": "b.png", "id": "k%d" % (i % 3)})
                    else:
                        c.call("POST", "/api/save", {"image": "b.png", "objects": [
                            {"id": "k%d" % (i % 3), "clicks": pts}, {"id": "k%d" % ((i + 1) % 3), "clicks": pts[:1]}]})
                except (OSError, ValueError):
                    return

        threads = [threading.Thread(target=saver, daemon=True) for _ in range(2)]
        [t.start() for t in threads]
        time.sleep(0.3 + rng.random() * 1.5)
        proc.kill()
        proc.wait()
        stop.set()
        [t.join(10) for t in threads]
        x = os.path.join(TMP, "x%d" % (k + 1))
        code, err = segment_cli(os.path.join(out, "clicks.json"), x)
        check(code == 0, "segment after kill -9 #%d: %d %s" % (k, code, err))
        for rel, path in masks_under(out).items():
            check(same_png(path, os.path.join(x, rel)), "after kill -9 #%d: %s on disk is not what the click file gives" % (k, rel))
    print("serve store ok: %d checks, %d kills" % (g.checks, kills))


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
