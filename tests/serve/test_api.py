#!/usr/bin/env python3
"""The JSON API of `m2n2 serve`, end to end against the real executable.

Every endpoint; every refused request (status and one-line JSON error); traversal and
symlink escapes; a failing image; two clients on two images at once; a client that
hangs up mid-request; the memory-bounded session set; save -> `m2n2 segment` bit for
bit; resuming from the saved clicks and from --clicks; usage errors; Ctrl-C.

    python3 tests/serve/test_api.py M2N2 SOURCE_DIR
"""
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from coco_rle import rle_counts  # noqa: E402

M2N2, ROOT = sys.argv[1], sys.argv[2]
TMP = tempfile.mkdtemp(prefix="m2n2-serve-")
ENV = dict(os.environ, M2N2_CACHE_DIR=os.path.join(TMP, "cache"), OMP_NUM_THREADS="2")
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


class Server:
    def __init__(self, *args, images=None, out=None):
        self.images = images or os.path.join(TMP, "images")
        self.out = out or os.path.join(TMP, "out")
        cmd = [M2N2, "serve", "--images", self.images, "--out", self.out, "--port", "0", *args]
        self.log = open(os.path.join(TMP, "serve-%d.log" % time.monotonic_ns()), "w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=ENV)
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline and self.port is None:
            if self.proc.poll() is not None:
                raise AssertionError("server exited: " + self.stderr())
            for line in self.stderr().splitlines():
                if "serving on http://127.0.0.1:" in line:
                    url = line.split("serving on ", 1)[1].split()[0]
                    self.port = int(url.rsplit(":", 1)[1].split("/")[0])
                    self.token = url.split("?token=", 1)[1]
            time.sleep(0.05)
        check(self.port, "server printed its URL on stderr")

    def stderr(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def request(self, method, path, body=None, raw=None, timeout=300):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Authorization": "Bearer " + self.token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read (413): the answer is there all the same
        r = conn.getresponse()
        payload = r.read()
        conn.close()
        return r.status, dict(r.getheaders()), payload

    def json(self, method, path, body=None, raw=None, expect=200):
        status, headers, payload = self.request(method, path, body, raw)
        check(headers.get("Content-Type", "").startswith("application/json"), "%s %s answers JSON" % (method, path))
        j = json.loads(payload)
        check(status == expect, "%s %s: status %d, expected %d: %s" % (method, path, status, expect, payload[:300]))
        if status >= 400:
            check(isinstance(j.get("error"), str) and j["error"] and "\n" not in j["error"], "one-line error: %r" % j)
        return j

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        check(code == 0, "exit 0 after signal %d, got %d: %s" % (sig, code, self.stderr()))
        check("stopping" in self.stderr(), "says it stops")
        self.log.close()


def decode_png(b64):
    return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)


def rle_area(rle):
    return sum(rle_counts(rle["counts"])[1::2])


def wait_ready(srv, image):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        s = srv.json("GET", "/api/status?image=" + image)
        if s["state"] in ("ready", "failed"):
            return s
        check(s["state"] in ("queued", "preparing"), "status while preparing: %r" % s)
        time.sleep(0.05)
    raise AssertionError("preparation did not end")


def main():
    images = os.path.join(TMP, "images")
    os.makedirs(images)
    for f in ("fruit.png", "kite.png"):
        shutil.copy(os.path.join(ROOT, "examples/images", f), images)
    with open(os.path.join(images, "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not a png")
    with open(os.path.join(images, "notes.txt"), "w") as f:
        f.write("not an image")
    outside = os.path.join(TMP, "secret.png")
    shutil.copy(os.path.join(ROOT, "examples/images", "kite.png"), outside)
    os.symlink(outside, os.path.join(images, "escape.png"))

    srv = Server()
    try:
        # ---- the page
        for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
            status, headers, body = srv.request("GET", path)
            check(status == 200 and headers["Content-Type"].startswith(kind) and len(body) > 500, "asset " + path)
        check(b"/app.js" in srv.request("GET", "/")[2], "page loads its script")

        info = srv.json("GET", "/api/info")
        check(info["images"] == 3 and info["out_dir"] == os.path.abspath(srv.out), "info: %r" % info)
        names = [i["name"] for i in srv.json("GET", "/api/images")["images"]]
        check(names == ["broken.png", "fruit.png", "kite.png"], "image list (no text file, no escaping link): %r" % names)
        check("escape.png" in srv.stderr() and "not served" in srv.stderr(), "the escaping link is reported")

        status, headers, body = srv.request("GET", "/api/image?name=fruit.png")
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        check(status == 200 and headers["Content-Type"] == "image/jpeg" and img.shape == (360, 480, 3), "image")
        check(headers["X-Image-Width"] == "480" and headers["X-Image-Height"] == "360", "image size headers")
        status, headers, body = srv.request("GET", "/api/thumb?name=kite.png")
        thumb = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        check(status == 200 and max(thumb.shape[:2]) == 160, "thumbnail %r" % (thumb.shape,))

        # ---- preparation and status
        s = srv.json("POST", "/api/prepare", {"image": "fruit.png"})
        check(s["state"] in ("queued", "preparing", "ready"), "prepare: %r" % s)
        check(srv.json("GET", "/api/status?image=kite.png")["state"] == "idle", "kite idle before use")
        s = wait_ready(srv, "fruit.png")
        check(s["state"] == "ready" and s["seconds"]["operator"] > 0 and s["bytes"] > 1e6, "ready: %r" % s)

        # ---- segment: PNG, RLE, soft map
        clicks = [{"x": 120, "y": 172, "positive": True}, {"x": 190, "y": 165, "positive": False}]
        r = srv.json("POST", "/api/segment", {"image": "fruit.png", "clicks": clicks, "soft": True})
        mask = decode_png(r["mask_png"])
        check(mask.shape == (360, 480) and set(np.unique(mask)) <= {0, 255}, "mask PNG")
        check(int((mask > 0).sum()) == r["area"] > 1000, "mask area %d" % r["area"])
        check(mask[172, 120] == 255 and mask[165, 190] == 0, "clicks on the right sides")
        check(decode_png(r["soft_png"]).shape == (360, 480, 3), "soft map picture")
        check(len(r["choices"]) == 2, "one threshold choice per click")
        r2 = srv.json("POST", "/api/segment", {"image": "fruit.png", "clicks": clicks, "format": "rle"})
        check(r2["rle"]["size"] == [360, 480] and rle_area(r2["rle"]) == r["area"], "RLE mask")

        m = srv.json("POST", "/api/markov-map", {"image": "fruit.png", "x": 120, "y": 172})
        heat = decode_png(m["png"])
        check(heat.shape[:2] == (m["grid"][1], m["grid"][0]) and m["max_steps"] > m["min_steps"] >= 0, "markov-map %r" % m["grid"])

        # ---- refused requests: status and one-line message
        bad = [
            ("POST", "/api/segment", None, "{bad", 400),
            ("POST", "/api/segment", None, "[1, 2]", 400),
            ("POST", "/api/segment", {"clicks": clicks}, None, 400),
            ("POST", "/api/segment", {"image": 7, "clicks": clicks}, None, 400),
            ("POST", "/api/segment", {"image": "nope.png", "clicks": clicks}, None, 404),
            ("POST", "/api/segment", {"image": "notes.txt", "clicks": clicks}, None, 404),
            ("POST", "/api/segment", {"image": "escape.png", "clicks": clicks}, None, 404),
            ("POST", "/api/segment", {"image": "../secret.png", "clicks": clicks}, None, 400),
            ("POST", "/api/segment", {"image": "/etc/passwd", "clicks": clicks}, None, 400),
            ("POST", "/api/segment", {"image": "..\\secret.png", "clicks": clicks}, None, 400),
            ("POST", "/api/segment", {"image": "fruit.png", "clicks": []}, None, 400),
            ("POST", "/api/segment", {"image": "fruit.png"}, None, 400),
            ("POST", "/api/segment", {"image": "fruit.png", "clicks": [{"x": "a", "y": 1}]}, None, 400),
            ("POST", "/api/segment", {"image": "fruit.png", "clicks": [{"x": 5, "y": 5}, {"x": 5, "y": 5, "positive": False}]}, None, 400),
            ("POST", "/api/segment", {"image": "fruit.png", "clicks": [{"x": 480, "y": 10}]}, None, 422),
            ("POST", "/api/segment", {"image": "fruit.png", "clicks": [{"x": -1, "y": 10}]}, None, 422),
            ("POST", "/api/segment", {"image": "fruit.png", "clicks": clicks, "format": "gif"}, None, 400),
            ("POST", "/api/markov-map", {"image": "fruit.png", "x": 10}, None, 400),
            ("POST", "/api/markov-map", {"image": "fruit.png", "x": 10, "y": 9999}, None, 422),
            ("POST", "/api/save", {"image": "fruit.png", "objects": []}, None, 400),
            ("POST", "/api/save", {"image": "fruit.png", "objects": [{"id": "a/b", "clicks": clicks}]}, None, 400),
            ("POST", "/api/save", {"image": "fruit.png", "objects": [{"id": "x", "clicks": clicks}, {"id": "x", "clicks": clicks}]}, None, 400),
            ("POST", "/api/delete", {"image": "fruit.png", "id": "never"}, None, 404),
            ("POST", "/api/delete", {"image": "fruit.png"}, None, 400),
            ("GET", "/api/image?name=..%2Fsecret.png", None, None, 400),
            ("GET", "/api/image?name=%2Fetc%2Fpasswd", None, None, 400),
            ("GET", "/api/image?name=escape.png", None, None, 404),
            ("GET", "/api/image", None, None, 400),
            ("GET", "/api/thumb?name=..%2F..%2Fetc%2Fpasswd", None, None, 400),
            ("GET", "/api/annotations?image=nope.png", None, None, 404),
            ("GET", "/api/status?image=", None, None, 400),
            ("GET", "/api/nothing", None, None, 404),
            ("GET", "/../../etc/passwd", None, None, 404),
            ("POST", "/api/segment", None, "x" * (2 << 20), 413),
        ]
        for method, path, body, raw, status in bad:
            srv.json(method, path, body, raw, expect=status)
        status, _, payload = srv.request("GET", "/api/segment")
        check(400 <= status < 500 and "error" in json.loads(payload), "GET on a POST endpoint: %d" % status)

        # ---- a failing image: 500 with its name, the server goes on
        e = srv.json("POST", "/api/segment", {"image": "broken.png", "clicks": [{"x": 1, "y": 1}]}, expect=500)
        check("broken.png" in e["error"], "failure names the file: %r" % e)
        check(srv.json("GET", "/api/status?image=broken.png")["state"] == "failed", "status failed")

        # ---- a preparation does not hold up clicks on a prepared image
        srv.json("POST", "/api/prepare", {"image": "kite.png"})
        srv.json("POST", "/api/segment", {"image": "fruit.png", "clicks": clicks})
        check(srv.json("GET", "/api/status?image=kite.png")["state"] in ("queued", "preparing"),
              "a click on fruit.png answered while kite.png is still being prepared")

        # ---- two clients on two images at once
        jobs = {"fruit.png": [{"x": 330, "y": 180}, {"x": 330, "y": 300, "positive": False}],
                "kite.png": [{"x": 250, "y": 110}]}
        results, errors = {}, []

        def client(image):
            try:
                for _ in range(3):
                    results.setdefault(image, []).append(
                        srv.json("POST", "/api/segment", {"image": image, "clicks": jobs[image]})["mask_png"])
            except Exception as ex:  # reported below
                errors.append(repr(ex))

        threads = [threading.Thread(target=client, args=(name,)) for name in jobs]
        [t.start() for t in threads]
        [t.join(300) for t in threads]
        check(not errors, "concurrent clients: %r" % errors)
        for image in jobs:
            check(len(set(results[image])) == 1, "the same mask every time for " + image)
        sessions = srv.json("GET", "/api/sessions")
        check({s["image"] for s in sessions["sessions"] if s["state"] == "ready"} == {"fruit.png", "kite.png"}, "%r" % sessions)
        check(sessions["budget"] > 0 and sessions["used"] > 0, "memory budget reported")

        # ---- a client that hangs up mid-request: nothing lost, the server goes on
        sock = socket.create_connection(("127.0.0.1", srv.port))
        body = json.dumps({"image": "kite.png", "clicks": [{"x": 200, "y": 200}]}).encode()
        sock.sendall(b"POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (srv.port, srv.token.encode(), len(body)) + body[:10])
        sock.close()

        # ---- save: masks as `m2n2 segment` writes them; clicks.json; round trip
        objects = [{"id": "apple", "clicks": clicks},
                   {"id": "bottle", "clicks": jobs["fruit.png"]},
                   {"id": 7, "clicks": [{"x": 190, "y": 165}, {"x": 190.4, "y": 165.2}, {"x": 122, "y": 172, "positive": False}]}]
        # The clicks of "7" arrive one at a time first, as from the page (per-point maps cached).
        for k in range(1, 4):
            srv.json("POST", "/api/segment", {"image": "fruit.png", "clicks": objects[2]["clicks"][:k]})
        saved = srv.json("POST", "/api/save", {"image": "fruit.png", "objects": objects})
        check([s["id"] for s in saved["saved"]] == ["apple", "bottle", "7"], "saved ids %r" % saved)
        srv.json("POST", "/api/save", {"image": "kite.png", "objects": [{"id": "kite", "clicks": jobs["kite.png"]}]})
        for s in saved["saved"]:
            check(os.path.isfile(s["mask"]) and s["mask"].startswith(os.path.abspath(srv.out)), "mask file " + s["mask"])
        click_file = os.path.join(srv.out, "clicks.json")
        spec = json.load(open(click_file))
        check([e["image"] for e in spec["images"]] == ["../images/fruit.png", "../images/kite.png"], "click file images %r" % spec)
        check(spec["images"][0]["objects"][2]["clicks"][1] == {"x": 122, "y": 172, "positive": False}, "duplicate pixel dropped")
        seg = subprocess.run([M2N2, "segment", "--clicks", click_file, "--out", os.path.join(TMP, "cli"), "-q"],
                             env=ENV, capture_output=True, text=True)
        check(seg.returncode == 0, "segment on the saved clicks: " + seg.stderr)
        for stem, ids in (("fruit", ["apple", "bottle", "7"]), ("kite", ["kite"])):
            for i in ids:
                a = open(os.path.join(srv.out, stem, i + ".png"), "rb").read()
                b = open(os.path.join(TMP, "cli", stem, i + ".png"), "rb").read()
                check(a == b, "saved %s/%s.png equals m2n2 segment's, byte for byte" % (stem, i))
        ann = srv.json("GET", "/api/annotations?image=fruit.png")
        check([o["id"] for o in ann["objects"]] == ["apple", "bottle", "7"] and "mask" in ann["objects"][0], "annotations")
        check(srv.json("GET", "/api/images")["images"][1]["saved"] == 3, "saved count in the list")

        coco = srv.json("GET", "/api/export/coco")
        check(len(coco) == 4 and coco[0]["image_id"] == 2 and coco[0]["file_name"] == "fruit.png", "coco %r" % coco[:1])
        check(coco[0]["area"] == rle_area(coco[0]["segmentation"]) and coco[0]["category_id"] == 1, "coco RLE area")

        d = srv.json("POST", "/api/delete", {"image": "fruit.png", "id": "bottle"})
        check(d["deleted"] == "bottle" and not os.path.exists(os.path.join(srv.out, "fruit", "bottle.png")), "delete")
        check(len(json.load(open(click_file))["images"][0]["objects"]) == 2, "delete rewrites the click file")
        leftovers = [f for _, _, fs in os.walk(srv.out) for f in fs if ".tmp" in f]
        check(not leftovers, "no temporaries left: %r" % leftovers)
        check(srv.json("POST", "/api/segment", {"image": "kite.png", "clicks": jobs["kite.png"]})["area"] > 0, "still serving")
    finally:
        srv.stop(signal.SIGINT)

    # ---- resume: OUT/clicks.json is read back
    srv = Server()
    try:
        ann = srv.json("GET", "/api/annotations?image=fruit.png")
        check([o["id"] for o in ann["objects"]] == ["apple", "7"], "resumed from OUT/clicks.json: %r" % ann)
        check("resuming from" in srv.stderr(), "says where it resumes from")
    finally:
        srv.stop(signal.SIGTERM)

    # ---- resume from a given click file (paths relative to it), a bounded session set
    shutil.copy(os.path.join(ROOT, "examples/clicks.json"), os.path.join(TMP, "clicks.json"))
    srv = Server("--clicks", os.path.join(TMP, "clicks.json"), "--grid", "32", "--max-memory", "100M",
                 out=os.path.join(TMP, "out2"))
    try:
        ann = srv.json("GET", "/api/annotations?image=fruit.png")
        check([o["id"] for o in ann["objects"]] == ["apple", "bottle", "orange"], "loaded --clicks: %r" % ann)
        check(srv.json("GET", "/api/annotations?image=kite.png")["objects"][0]["id"] == "kite", "kite loaded")
        srv.json("POST", "/api/segment", {"image": "fruit.png", "clicks": [{"x": 120, "y": 172}]})
        one = srv.json("GET", "/api/sessions")
        check(0 < one["used"] <= 100 * 2**20, "one session within the budget: %r" % one)
        srv.json("POST", "/api/segment", {"image": "kite.png", "clicks": [{"x": 250, "y": 110}]})
        two = srv.json("GET", "/api/sessions")
        ready = [s["image"] for s in two["sessions"] if s["state"] == "ready"]
        check(ready == ["kite.png"], "the least recently used session was evicted: %r" % two)
        check(two["used"] <= 100 * 2**20, "within the budget")
        r = srv.json("POST", "/api/segment", {"image": "fruit.png", "clicks": [{"x": 120, "y": 172}]})
        check(r["area"] > 0, "an evicted image is prepared again on use")
    finally:
        srv.stop()

    # ---- usage errors: exit 2, one line
    for args, needle in ((["--images", os.path.join(TMP, "none")], "not a folder"),
                         (["--images", images, "--port", "70000"], "--port"),
                         (["--images", images, "--clicks", os.path.join(images, "notes.txt")], "notes.txt"),
                         (["--images", images, "--source", "nonsense:x"], "nonsense")):
        p = subprocess.run([M2N2, "serve", "--out", os.path.join(TMP, "o3"), *args], env=ENV, capture_output=True, text=True, timeout=60)
        lines = [l for l in p.stderr.strip().splitlines() if ": warning: " not in l]
        check(p.returncode == 2 and len(lines) == 1 and needle in lines[0], "usage error %r: %d %r" % (args, p.returncode, p.stderr))
    # A port in use: exit 1, one line.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    p = subprocess.run([M2N2, "serve", "--images", images, "--port", str(blocker.getsockname()[1]), "-q"],
                       env=ENV, capture_output=True, text=True, timeout=60)
    check(p.returncode == 1 and "cannot listen" in p.stderr, "port in use: %d %r" % (p.returncode, p.stderr))
    blocker.close()
    print("serve api ok: %d checks" % checks)


try:
    main()
finally:
    shutil.rmtree(TMP, ignore_errors=True)
