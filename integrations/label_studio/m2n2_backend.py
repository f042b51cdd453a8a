#!/usr/bin/env python3
"""Label Studio ML backend that asks a running `m2n2 serve` for masks.

Label Studio's interactive ("smart") keypoints arrive at POST /predict as the context of
the task: keypointlabels results with x, y in percent of the image and "is_positive".
The answer is one brushlabels result whose mask is in Label Studio's brush RLE (the
format of label-studio-converter's brush.encode_rle over RGBA pixels). Also POST /setup
and GET /health, as Label Studio calls them. Needs python3-numpy and python3-opencv.

    M2N2_URL=http://127.0.0.1:8765 M2N2_TOKEN=... python3 m2n2_backend.py --port 9090

Environment: M2N2_URL, M2N2_TOKEN or M2N2_TOKEN_FILE, M2N2_TIMEOUT (seconds);
LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to fetch uploaded images (/data/upload/...);
LOCAL_FILES_DOCUMENT_ROOT for local-storage images (/data/local-files/?d=...).
"""
import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

MODEL_VERSION = "m2n2-serve"
MAX_BODY = 16 << 20        # a /predict request
MAX_IMAGE = 64 << 20       # an image fetched for a task
MAX_POINTS = 1000


class Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def config():
    token = os.environ.get("M2N2_TOKEN", "")
    if not token and os.environ.get("M2N2_TOKEN_FILE"):
        with open(os.environ["M2N2_TOKEN_FILE"], encoding="utf-8") as f:
            token = f.read().strip()
    return {
        "url": os.environ.get("M2N2_URL", "http://127.0.0.1:8765").rstrip("/"),
        "token": token,
        "timeout": float(os.environ.get("M2N2_TIMEOUT", "60")),
        "ls_url": os.environ.get("LABEL_STUDIO_URL", "").rstrip("/"),
        "ls_key": os.environ.get("LABEL_STUDIO_API_KEY", ""),
        "local_root": os.environ.get("LOCAL_FILES_DOCUMENT_ROOT", ""),
    }


# ---------------------------------------------------------------- Label Studio's brush RLE
def brush_rle(mask):
    """A 2-D mask -> Label Studio's brush RLE (list of byte values): the mask repeated
    over 4 channels (RGBA), 0/255, as a bit stream: 32 bits element count, 5 bits word
    size - 1 (8 bits), four 4-bit run-length field sizes - 1 (3, 4, 8, 16), then per run
    a flag bit (1 = run of one value), a 2-bit field size index, the length - 1, and the
    8-bit value."""
    flat = np.repeat(np.where(mask.ravel() > 0, 255, 0).astype(np.uint8), 4)
    bits = ["{:032b}".format(flat.size), "{:05b}".format(7), "".join("{:04b}".format(s - 1) for s in (3, 4, 8, 16))]
    if flat.size:
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.concatenate(([0], edges))
        lengths = np.diff(np.concatenate((starts, [flat.size])))
        for start, length in zip(starts.tolist(), lengths.tolist()):
            value = "{:08b}".format(int(flat[start]))
            if length == 1:
                bits.append("0" + "00" + "000" + value)
                continue
            while length > 1 << 16:
                bits.append("1" + "11" + "{:016b}".format((1 << 16) - 1) + value)
                length -= 1 << 16
            for index, size in enumerate((3, 4, 8, 16)):
                if length <= 1 << size:
                    bits.append("1" + "{:02b}".format(index) + ("{:0%db}" % size).format(length - 1) + value)
                    break
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return list(int(stream, 2).to_bytes(len(stream) // 8, "big"))


# ---------------------------------------------------------------- the labeling config
def tags(label_config):
    """(brush tag name, its image tag name, the image's data key, brush label values)."""
    try:
        root = ET.fromstring(label_config or "")
    except ET.ParseError as e:
        raise Refused(400, "label_config is not XML: %s" % e)
    brush = next((t for t in root.iter() if t.tag.lower() == "brushlabels"), None)
    if brush is None or not brush.get("name") or not brush.get("toName"):
        raise Refused(400, "label_config has no <BrushLabels name=... toName=...>")
    image = next((t for t in root.iter() if t.tag == "Image" and t.get("name") == brush.get("toName")), None)
    if image is None or not (image.get("value") or "").startswith("$"):
        raise Refused(400, "label_config has no <Image name=\"%s\" value=\"$...\">" % brush.get("toName"))
    labels = [t.get("value") for t in brush if t.get("value")]
    return brush.get("name"), brush.get("toName"), image.get("value")[1:], labels


# ---------------------------------------------------------------- the task's image
def fetch(url, headers):
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            data = r.read(MAX_IMAGE + 1)
    except (urllib.error.URLError, OSError) as e:
        raise Refused(502, "cannot fetch %s: %s" % (url, e))
    if len(data) > MAX_IMAGE:
        raise Refused(413, "%s: image larger than %d bytes" % (url, MAX_IMAGE))
    return data


def image_bytes(cfg, ref):
    """The bytes of a task's image: a data: URL, local storage, or a URL (Label Studio's
    /data/upload/... paths are fetched from LABEL_STUDIO_URL with its API key)."""
    if not isinstance(ref, str) or not ref:
        raise Refused(400, "the task has no image reference")
    if ref.startswith("data:"):
        head, _, payload = ref.partition(",")
        if ";base64" not in head:
            raise Refused(400, "a data: URL must be base64")
        try:
            return base64.b64decode(payload, validate=True)
        except ValueError:
            raise Refused(400, "the data: URL is not valid base64")
    parsed = urllib.parse.urlparse(ref)
    if parsed.path.startswith("/data/local-files") and cfg["local_root"]:
        rel = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
        root = os.path.realpath(cfg["local_root"])
        path = os.path.realpath(os.path.join(root, rel))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            raise Refused(404, "%s: not a file under LOCAL_FILES_DOCUMENT_ROOT" % rel)
        if os.path.getsize(path) > MAX_IMAGE:
            raise Refused(413, "%s: image larger than %d bytes" % (rel, MAX_IMAGE))
        with open(path, "rb") as f:
            return f.read()
    if parsed.scheme in ("http", "https"):
        same = cfg["ls_url"] and ref.startswith(cfg["ls_url"] + "/")
        return fetch(ref, {"Authorization": "Token " + cfg["ls_key"]} if same and cfg["ls_key"] else {})
    if ref.startswith("/") and cfg["ls_url"]:
        return fetch(cfg["ls_url"] + ref, {"Authorization": "Token " + cfg["ls_key"]} if cfg["ls_key"] else {})
    raise Refused(400, "cannot read the image %r (set LABEL_STUDIO_URL or LOCAL_FILES_DOCUMENT_ROOT)" % ref[:200])


# ---------------------------------------------------------------- m2n2 serve
def interact(cfg, body):
    req = urllib.request.Request(cfg["url"] + "/api/v1/interact", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if cfg["token"]:
        req.add_header("Authorization", "Bearer " + cfg["token"])
    try:
        with urllib.request.urlopen(req, timeout=cfg["timeout"]) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", "")
        except ValueError:
            message = ""
        raise Refused(e.code if 400 <= e.code < 500 else 502, "m2n2 serve: HTTP %d %s" % (e.code, message))
    except (urllib.error.URLError, OSError) as e:
        raise Refused(502, "m2n2 serve at %s: %s" % (cfg["url"], e))


def clicks_of(context):
    """Keypoint results of the context -> (clicks in pixels, keypoint label, width, height)."""
    results = [r for r in (context or {}).get("result", []) if isinstance(r, dict) and r.get("type") == "keypointlabels"]
    if not results:
        return None
    if len(results) > MAX_POINTS:
        raise Refused(400, "too many keypoints (%d; at most %d)" % (len(results), MAX_POINTS))
    clicks, label, size = [], None, None
    for r in results:
        try:
            w, h = int(r["original_width"]), int(r["original_height"])
            x, y = float(r["value"]["x"]), float(r["value"]["y"])
        except (KeyError, TypeError, ValueError):
            raise Refused(400, "a keypoint needs original_width, original_height and value.x, value.y")
        size = size or (w, h)
        # Percent -> pixels; rounded to 1e-6 px so that float error does not move a click.
        clicks.append({"x": round(x * w / 100.0, 6), "y": round(y * h / 100.0, 6),
                       "positive": bool(r.get("is_positive", True))})
        label = label or (r["value"].get("keypointlabels") or [None])[0]
    return clicks, label, size[0], size[1]


def predict(cfg, request):
    tasks = request.get("tasks")
    if not isinstance(tasks, list) or not tasks or not isinstance(tasks[0], dict):
        raise Refused(400, "\"tasks\" must be a non-empty list")
    params = request.get("params") or {}
    context = params.get("context") if isinstance(params, dict) and "context" in params else request.get("context")
    found = clicks_of(context)
    if not found:  # no interaction yet: nothing to predict
        return {"results": [], "model_version": MODEL_VERSION}
    clicks, keypoint_label, width, height = found
    from_name, to_name, data_key, labels = tags(request.get("label_config"))
    raw = image_bytes(cfg, (tasks[0].get("data") or {}).get(data_key))
    answer = interact(cfg, {"image_base64": base64.b64encode(raw).decode(), "clicks": clicks, "format": "png"})
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(answer["mask_png"]), np.uint8), cv2.IMREAD_GRAYSCALE)
    label = keypoint_label if keypoint_label in labels or not labels else labels[0]
    result = {
        "id": uuid.uuid4().hex[:10],
        "from_name": from_name,
        "to_name": to_name,
        "type": "brushlabels",
        "original_width": int(mask.shape[1]),
        "original_height": int(mask.shape[0]),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": brush_rle(mask), "brushlabels": [label] if label else []},
        "readonly": False,
    }
    if (width, height) != (mask.shape[1], mask.shape[0]):
        sys.stderr.write("m2n2 backend: the task says %dx%d, the image is %dx%d\n" % (width, height, mask.shape[1], mask.shape[0]))
    prediction = {"result": [result], "model_version": MODEL_VERSION, "score": 1.0}
    return {"results": [prediction], "model_version": MODEL_VERSION}


class Handler(BaseHTTPRequestHandler):
    cfg = None

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.split("?")[0] in ("/", "/health"):
            self.answer(200, {"status": "UP", "model_class": "M2N2", "m2n2": self.cfg["url"]})
        else:
            self.answer(404, {"error": "no such endpoint"})

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length") or -1)
            if length < 0:
                raise Refused(411, "a Content-Length is needed")
            if length > MAX_BODY:
                raise Refused(413, "request body too large")
            try:
                request = json.loads(self.rfile.read(length))
            except ValueError:
                raise Refused(400, "request body is not valid JSON")
            if not isinstance(request, dict):
                raise Refused(400, "request body must be a JSON object")
            path = self.path.split("?")[0]
            if path == "/predict":
                self.answer(200, predict(self.cfg, request))
            elif path == "/setup":
                self.answer(200, {"model_version": MODEL_VERSION})
            elif path in ("/webhook", "/train"):
                self.answer(201, {})
            else:
                raise Refused(404, "no such endpoint")
        except Refused as e:
            self.answer(e.status, {"error": str(e)})
        except RecursionError:
            self.answer(400, {"error": "request nested too deeply"})

    def log_message(self, fmt, *args):
        sys.stderr.write("m2n2 backend: " + fmt % args + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9090, help="0 = any free port")
    args = ap.parse_args()
    Handler.cfg = config()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    sys.stderr.write("m2n2 backend: listening on http://%s:%d/ (m2n2 serve at %s)\n"
                     % (args.host, server.server_address[1], Handler.cfg["url"]))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
