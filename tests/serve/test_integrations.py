#!/usr/bin/env python3
"""POST /api/v1/interact and the CVAT / Label Studio integrations, end to end.

A real `m2n2 serve`; requests written from the tools' public contracts (CVAT's interactor
call to a nuclio function, Label Studio's ML backend /predict with keypoint context) go
through integrations/cvat/main.py and integrations/label_studio/m2n2_backend.py; every
answer is decoded (PNG, COCO RLE, polygons, CVAT's mask rows, Label Studio's brush RLE,
with decoders written here from the formats) and compared with the mask that
`m2n2 segment --image ... --click ...` writes for the same clicks: pixel for pixel.
Also the content-hash session reuse and the refused requests.

    python3 tests/serve/test_integrations.py M2N2 SOURCE_DIR
"""
import base64
import http.client
import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import cv2
import numpy as np

M2N2, ROOT = sys.argv[1], sys.argv[2]
TMP = tempfile.mkdtemp(prefix="m2n2-integrations-")
ENV = dict(os.environ, M2N2_CACHE_DIR=os.path.join(TMP, "cache"), OMP_NUM_THREADS="2")
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


def wait_for(log_path, proc, marker, what):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("%s exited: %s" % (what, open(log_path).read()))
        for line in open(log_path).read().splitlines():
            if marker in line:
                return line
        time.sleep(0.05)
    raise AssertionError(what + " did not start")


class Serve:
    """`m2n2 serve`; the token is taken from its URL on stderr when it prints one."""

    def __init__(self, images, *args):
        self.log = os.path.join(TMP, "serve.log")
        self.proc = subprocess.Popen([M2N2, "serve", "--images", images, "--out", os.path.join(TMP, "out"), "--port", "0",
                                      "--max-body", "16M", *args], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "w"), env=ENV)
        line = wait_for(self.log, self.proc, "http://127.0.0.1:", "m2n2 serve")
        url = line[line.index("http://"):].split()[0]
        self.port = int(url.split(":")[2].split("/")[0])
        self.token = url.split("token=", 1)[1] if "token=" in url else ""
        self.url = "http://127.0.0.1:%d" % self.port

    def request(self, method, path, body=None, raw=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        if headers is None:
            headers = {"Content-Type": "application/json"}
            if self.token:
                headers["Authorization"] = "Bearer " + self.token
        try:
            conn.request(method, path, body=raw if raw is not None else (json.dumps(body) if body is not None else None),
                         headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read (413): the answer is there all the same
        r = conn.getresponse()
        payload = r.read()
        conn.close()
        return r.status, json.loads(payload)

    def interact(self, body, expect=200, raw=None):
        status, j = self.request("POST", "/api/v1/interact", body, raw)
        check(status == expect, "interact: status %d, expected %d: %s" % (status, expect, str(j)[:300]))
        if status >= 400:
            check(isinstance(j.get("error"), str) and j["error"] and "\n" not in j["error"], "one-line error %r" % j)
        return j

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)


def b64(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def decode_png(text):
    return cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_UNCHANGED)


def coco_rle_mask(rle):
    """COCO compressed RLE (LEB128-like 5-bit groups, deltas from the count two back;
    runs alternate from zeros over the mask in column-major order) -> 0/1 array."""
    s, counts, i = rle["counts"], [], 0
    while i < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[i]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    h, w = rle["size"]
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)
    check(flat.size == h * w, "RLE covers the mask")
    return flat.reshape(w, h).T


def ls_brush_mask(rle, h, w):
    """Label Studio's brush RLE -> the alpha channel: a bit stream of 32 bits element
    count, 5 bits word size - 1, four 4-bit run-field sizes - 1, then runs: 1 flag bit
    (1: one value repeated), 2 bits choosing the field size, length - 1, value(s)."""
    bits = "".join("{:08b}".format(b) for b in rle)
    pos = 0

    def read(n):
        nonlocal pos
        v = int(bits[pos:pos + n], 2)
        pos += n
        return v

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out, i = np.zeros(num, np.uint8), 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
        else:
            while i < j:
                out[i] = read(word)
                i += 1
        i = j
    check(num == h * w * 4, "brush RLE of %d values for %dx%d RGBA" % (num, w, h))
    return out.reshape(h, w, 4)[:, :, 3]


def reference(image, clicks, name):
    """The mask `m2n2 segment` writes for these clicks on this file."""
    out = os.path.join(TMP, name + ".png")
    args = [M2N2, "segment", "--image", image, "--out", out, "-q"]
    for c in clicks:
        args += ["--click", "%g,%g,%s" % (c["x"], c["y"], "+" if c.get("positive", True) else "-")]
    r = subprocess.run(args, env=ENV, capture_output=True, text=True)
    check(r.returncode == 0, "m2n2 segment: " + r.stderr)
    return cv2.imread(out, cv2.IMREAD_UNCHANGED)


def same(mask, ref, what):
    check(mask.shape == ref.shape, "%s: shape %r, expected %r" % (what, mask.shape, ref.shape))
    check(np.array_equal(mask > 0, ref > 0), "%s: %d pixels differ from m2n2 segment's mask"
          % (what, int(((mask > 0) != (ref > 0)).sum())))


def rasterize(polygons, h, w):
    """Polygons on the pixel-corner lattice ({"outer": [x0, y0, ...], "holes": [...]}) ->
    the pixels whose centres lie inside, by the even-odd rule over every ring."""
    rings = [p["outer"] for p in polygons] + [hole for p in polygons for hole in p["holes"]]
    edges = []
    for ring in rings:
        pts = list(zip(ring[0::2], ring[1::2]))
        edges += [(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))]
    out = np.zeros((h, w), np.uint8)
    for y in range(h):
        yc = y + 0.5
        xs = sorted(x0 + (yc - y0) * (x1 - x0) / (y1 - y0) for (x0, y0), (x1, y1) in edges
                    if (y0 <= yc < y1) or (y1 <= yc < y0))
        for a, b in zip(xs[0::2], xs[1::2]):
            lo, hi = max(0, int(np.ceil(a - 0.5))), min(w, int(np.ceil(b - 0.5)))
            out[y, lo:hi] ^= 1
    return out


def png_with_size(w, h):
    """A small PNG file whose header declares w x h (its data is not an image of that size)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def jpeg_with_size(w, h):
    """A JPEG start whose frame header (SOF0) declares w x h."""
    sof = struct.pack(">BBHBHHB", 0xFF, 0xC0, 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0" + sof + b"\xff\xd9"


def load_cvat_function():
    spec = importlib.util.spec_from_file_location("cvat_main", os.path.join(ROOT, "integrations/cvat/main.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NuclioContext:
    """What a nuclio Python handler is given: a logger, user_data, and Response."""

    class Logger:
        def info(self, msg):
            pass

        def warn(self, msg):
            self.last = msg

    class UserData:
        pass

    class Response:
        def __init__(self, body, headers, content_type, status_code):
            self.body, self.headers, self.content_type, self.status_code = body, headers, content_type, status_code

    def __init__(self):
        self.logger, self.user_data = self.Logger(), self.UserData()


class Event:
    def __init__(self, body):
        self.body = body


def cvat_call(cvat, ctx, payload, expect=200, as_bytes=False):
    event = Event(json.dumps(payload).encode() if as_bytes else payload)
    r = cvat.handler(ctx, event)
    check(r.content_type == "application/json", "CVAT answer is JSON")
    body = json.loads(r.body)
    check(r.status_code == expect, "CVAT handler: status %d, expected %d: %s" % (r.status_code, expect, str(body)[:300]))
    return body


def ls_request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    payload = json.loads(r.read())
    conn.close()
    return r.status, payload


LS_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="Fruit" background="#FF0000"/><Label value="Kite"/></BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true"><Label value="Fruit" smart="true"/></KeyPointLabels>
</View>"""


def ls_keypoint(x, y, w, h, positive, label="Fruit"):
    """A keypointlabels result as Label Studio puts it in the context (percent of the image)."""
    return {"original_width": w, "original_height": h, "image_rotation": 0, "id": "k%d%d" % (x, y),
            "from_name": "tag2", "to_name": "image", "type": "keypointlabels", "origin": "manual",
            "is_positive": positive, "value": {"x": 100.0 * x / w, "y": 100.0 * y / h, "width": 0.5,
                                               "keypointlabels": [label]}}


def main():
    images = os.path.join(TMP, "images")
    os.makedirs(images)
    for f in ("fruit.png", "kite.png"):
        shutil.copy(os.path.join(ROOT, "examples/images", f), images)
    fruit, kite = os.path.join(images, "fruit.png"), os.path.join(images, "kite.png")
    # The same pixels in a PNG written differently (other compression): the same content.
    fruit_again = os.path.join(TMP, "fruit-again.png")
    cv2.imwrite(fruit_again, cv2.imread(fruit, cv2.IMREAD_UNCHANGED), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    check(open(fruit_again, "rb").read() != open(fruit, "rb").read(), "a different file of the same pixels")
    fruit_jpg = os.path.join(TMP, "fruit.jpg")
    cv2.imwrite(fruit_jpg, cv2.imread(fruit, cv2.IMREAD_COLOR), [cv2.IMWRITE_JPEG_QUALITY, 90])

    clicks = [{"x": 120, "y": 172, "positive": True}, {"x": 190, "y": 165, "positive": False}]
    kite_clicks = [{"x": 250, "y": 110, "positive": True}]
    ref = reference(fruit, clicks, "ref-fruit")
    ref_jpg = reference(fruit_jpg, clicks, "ref-fruit-jpg")
    ref_kite = reference(kite, kite_clicks, "ref-kite")
    check(1000 < int((ref > 0).sum()) < ref.size // 2, "the reference mask is an object")

    srv = Serve(images)
    try:
        # ---- the endpoint: each format against m2n2 segment's mask
        first = srv.interact({"image_base64": b64(fruit), "clicks": clicks})
        check(first["session"].startswith("upload:") and first["reused"] is False, "first upload: new session %r" % first)
        same(decode_png(first["mask_png"]), ref, "interact PNG")
        check(first["width"] == 480 and first["height"] == 360 and first["area"] == int((ref > 0).sum()), "size, area")
        r = srv.interact({"image_base64": b64(fruit), "clicks": clicks, "format": "rle"})
        check(r["reused"] is True and r["session"] == first["session"], "second click on the upload reuses its session")
        check(r["rle"]["size"] == [360, 480], "RLE size")
        same(coco_rle_mask(r["rle"]), ref, "interact COCO RLE")
        r = srv.interact({"image_base64": "data:image/png;base64," + b64(fruit_again), "clicks": clicks,
                          "format": "polygons", "tolerance": 0})
        check(r["session"] == first["session"] and r["reused"], "same pixels, other file: the same session")
        check(r["polygons"] and all(len(p["outer"]) >= 8 for p in r["polygons"]), "polygons %r" % str(r["polygons"])[:200])
        same(rasterize(r["polygons"], 360, 480), ref, "interact polygons at tolerance 0 (pixel centres, even-odd)")
        coarse = srv.interact({"image_base64": b64(fruit), "clicks": clicks, "format": "polygons", "tolerance": 3})
        check(sum(len(p["outer"]) for p in coarse["polygons"]) < sum(len(p["outer"]) for p in r["polygons"]),
              "tolerance simplifies")
        fine = rasterize(coarse["polygons"], 360, 480)
        inter, union = int(((fine > 0) & (ref > 0)).sum()), int(((fine > 0) | (ref > 0)).sum())
        check(inter / union > 0.95, "simplified polygons still cover the mask (IoU %.3f)" % (inter / union))
        r = srv.interact({"image": "fruit.png", "clicks": clicks})
        check(r["session"] == "fruit.png", "a listed image by name")
        same(decode_png(r["mask_png"]), ref, "interact by name")
        r = srv.interact({"image_base64": b64(fruit_jpg), "clicks": clicks})
        same(decode_png(r["mask_png"]), ref_jpg, "interact on a JPEG upload")
        _, sessions = srv.request("GET", "/api/sessions")
        uploads = [s for s in sessions["sessions"] if s["image"].startswith("upload:")]
        check(len(uploads) == 2, "one session per uploaded content (PNG twice, JPEG): %r" % sessions)

        # ---- refused requests: status and one line
        png = b64(fruit)
        for body, status in [
            ({"image_base64": "not base64 !!", "clicks": clicks}, 400),
            ({"image_base64": png[:-5] + "*" + png[-4:], "clicks": clicks}, 400),
            ({"image_base64": png[:len(png) // 2], "clicks": clicks}, 400),
            ({"image_base64": base64.b64encode(b"GIF89a" + b"\0" * 50).decode(), "clicks": clicks}, 400),
            ({"image_base64": base64.b64encode(png_with_size(100000, 100000)).decode(), "clicks": clicks}, 422),
            ({"image_base64": base64.b64encode(png_with_size(1 << 31, 3)).decode(), "clicks": clicks}, 422),
            ({"image_base64": base64.b64encode(jpeg_with_size(65000, 65000)).decode(), "clicks": clicks}, 422),
            ({"image_base64": png, "clicks": []}, 400),
            ({"image_base64": png}, 400),
            ({"image_base64": png, "clicks": [{"x": 5000, "y": 3}]}, 422),
            ({"image_base64": png, "clicks": [7]}, 400),
            ({"image_base64": png, "clicks": [{"x": {"deep": [[[1]]]}, "y": 3}]}, 400),
            ({"image_base64": png, "image": "fruit.png", "clicks": clicks}, 400),
            ({"clicks": clicks}, 400),
            ({"image": "nope.png", "clicks": clicks}, 404),
            ({"image": "../images/fruit.png", "clicks": clicks}, 404),
            ({"image": "fruit.png\nX-Injected: 1", "clicks": clicks}, 404),
            ({"image": "fruit.png", "clicks": clicks, "format": "gif"}, 400),
            ({"image": "fruit.png", "clicks": clicks, "tolerance": -1}, 400),
        ]:
            srv.interact(body, expect=status)
        e = srv.interact({"image_base64": png, "clicks": [{"x": i % 400, "y": 3 + i // 400} for i in range(1001)]}, expect=422)
        check("--max-clicks" in e["error"], "too many clicks: %r" % e)
        e = srv.interact({"image_base64": base64.b64encode(jpeg_with_size(65000, 65000)).decode(), "clicks": clicks}, expect=422)
        check("--max-pixels" in e["error"], "too large: %r" % e)
        srv.interact({"image_base64": png, "clicks": [{"x": 120, "y": 172}] * 1001}, expect=200)  # one distinct click
        srv.interact(None, expect=400, raw="[1, 2]")
        srv.interact(None, expect=400, raw="[" * 100000 + "]" * 100000)
        srv.interact(None, expect=413, raw=json.dumps({"image_base64": "A" * (17 << 20), "clicks": clicks}))
        srv.interact({"image_base64": b64(kite), "clicks": kite_clicks})  # the server goes on
        if srv.token:  # the server's access control covers the endpoint
            body = json.dumps({"image": "fruit.png", "clicks": clicks})
            status, _ = srv.request("POST", "/api/v1/interact", raw=body, headers={"Content-Type": "application/json"})
            check(status == 401, "no token: 401, got %d" % status)
            status, _ = srv.request("POST", "/api/v1/interact", raw=body, headers={
                "Content-Type": "text/plain", "Authorization": "Bearer " + srv.token})
            check(status in (403, 415), "a text/plain POST is refused, got %d" % status)
            status, _ = srv.request("POST", "/api/v1/interact", raw=body, headers={
                "Content-Type": "application/json", "Authorization": "Bearer " + srv.token, "Origin": "http://evil.example"})
            check(status == 403, "a cross-site POST is refused, got %d" % status)

        # ---- CVAT: the interactor request CVAT's lambda manager sends to the function
        os.environ.update({"M2N2_URL": srv.url, "M2N2_TOKEN": srv.token})
        cvat = load_cvat_function()
        ctx = NuclioContext()
        cvat.init_context(ctx)
        payload = {"image": b64(fruit), "pos_points": [[120.0, 172.0]], "neg_points": [[190.0, 165.0]],
                   "obj_bbox": None, "threshold": 0.5}
        answer = cvat_call(cvat, ctx, payload)
        mask = np.array(answer["mask"], np.uint8)
        check(set(np.unique(mask)) <= {0, 1}, "CVAT mask of 0/1")
        same(mask, ref, "CVAT interactor")
        same(np.array(cvat_call(cvat, ctx, payload, as_bytes=True)["mask"], np.uint8), ref, "CVAT, body as bytes")
        answer = cvat_call(cvat, ctx, dict(payload, image=b64(fruit_jpg)))
        same(np.array(answer["mask"], np.uint8), ref_jpg, "CVAT interactor, JPEG frame")
        box = dict(payload, obj_bbox=[[100, 120], [160, 200]])
        boxed = ref.copy()
        boxed[:, :100] = 0
        boxed[:, 161:] = 0
        boxed[:120, :] = 0
        boxed[201:, :] = 0
        same(np.array(cvat_call(cvat, ctx, box)["mask"], np.uint8), boxed, "CVAT interactor, obj_bbox clears outside")
        cvat_call(cvat, ctx, dict(payload, pos_points=[]), expect=400)
        cvat_call(cvat, ctx, dict(payload, pos_points=[["a", 1]]), expect=400)
        cvat_call(cvat, ctx, dict(payload, image="%%%"), expect=400)
        cvat_call(cvat, ctx, dict(payload, pos_points=[[5000, 1]]), expect=422)
        ctx.user_data.m2n2 = dict(ctx.user_data.m2n2, url="http://127.0.0.1:9")
        cvat_call(cvat, ctx, payload, expect=502)

        # ---- Label Studio: the ML backend's /health, /setup and an interactive /predict
        log = os.path.join(TMP, "ls.log")
        ls = subprocess.Popen([sys.executable, os.path.join(ROOT, "integrations/label_studio/m2n2_backend.py"), "--port", "0"],
                              env=dict(ENV, M2N2_URL=srv.url, M2N2_TOKEN=srv.token, LOCAL_FILES_DOCUMENT_ROOT=images),
                              stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        try:
            line = wait_for(log, ls, "listening on http://", "the Label Studio backend")
            port = int(line.split("http://")[1].split("/")[0].split(":")[1])
            status, health = ls_request(port, "GET", "/health")
            check(status == 200 and health["status"] == "UP", "health %r" % health)
            status, setup = ls_request(port, "POST", "/setup", {"project": "1.1700000000", "schema": LS_CONFIG,
                                                                 "hostname": "http://localhost:8080", "access_token": "x"})
            check(status == 200 and setup["model_version"], "setup %r" % setup)
            task = {"id": 7, "data": {"image": "/data/local-files/?d=fruit.png"}}
            context = {"result": [ls_keypoint(c["x"], c["y"], 480, 360, c["positive"]) for c in clicks]}
            request = {"tasks": [task], "project": "1.1700000000", "label_config": LS_CONFIG,
                       "params": {"login": None, "password": None, "context": context}}
            status, answer = ls_request(port, "POST", "/predict", request)
            check(status == 200 and len(answer["results"]) == 1, "predict: %s" % str(answer)[:300])
            result = answer["results"][0]["result"][0]
            check(result["type"] == "brushlabels" and result["from_name"] == "tag" and result["to_name"] == "image",
                  "a brushlabels result for the brush tag: %r" % {k: result[k] for k in ("type", "from_name", "to_name")})
            check(result["value"]["format"] == "rle" and result["value"]["brushlabels"] == ["Fruit"], "label, format")
            check((result["original_width"], result["original_height"]) == (480, 360), "original size")
            same(ls_brush_mask(result["value"]["rle"], 360, 480), ref, "Label Studio brush RLE")
            kite_task = {"id": 8, "data": {"image": "data:image/png;base64," + b64(kite)}}
            status, answer = ls_request(port, "POST", "/predict", dict(request, tasks=[kite_task], params={"context": {
                "result": [ls_keypoint(250, 110, 420, 300, True, "Kite")]}}))
            check(status == 200, "predict on a data: URL: %s" % str(answer)[:300])
            h, w = ref_kite.shape
            same(ls_brush_mask(answer["results"][0]["result"][0]["value"]["rle"], h, w), ref_kite, "Label Studio, data: URL")
            status, answer = ls_request(port, "POST", "/predict", dict(request, params={}))
            check(status == 200 and answer["results"] == [], "no context: no prediction")
            for bad, code in [(dict(request, tasks=[]), 400),
                              (dict(request, label_config="<View><Image name='i' value='$image'/></View>"), 400),
                              (dict(request, tasks=[{"id": 9, "data": {"image": "/data/local-files/?d=../../etc/passwd"}}]), 404),
                              (dict(request, params={"context": {"result": [ls_keypoint(5000, 1, 480, 360, True)]}}), 422)]:
                status, answer = ls_request(port, "POST", "/predict", bad)
                check(status == code and "error" in answer, "LS backend refuses: %d %r" % (status, answer))
        finally:
            ls.send_signal(signal.SIGINT)
            ls.wait(timeout=30)
    finally:
        srv.stop()
    print("%d checks passed" % checks)
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
