"""CVAT interactor (nuclio function) that asks a running `m2n2 serve` for the mask.

CVAT sends {"image": base64 frame, "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
"obj_bbox": [[x1, y1], [x2, y2]] or null, "threshold": number}; the answer is
{"mask": rows of 0/1, the frame's size}. Standard library only.

Environment: M2N2_URL (default http://127.0.0.1:8765), M2N2_TOKEN or M2N2_TOKEN_FILE
(the server's token, sent as "Authorization: Bearer"), M2N2_TIMEOUT (seconds, default 60).
"""
import json
import os
import urllib.error
import urllib.request

MAX_POINTS = 1000


class BadRequest(Exception):
    """The request CVAT sent cannot be used (answered 400)."""


class ServerError(Exception):
    """m2n2 serve refused or failed (answered with its status)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def config():
    token = os.environ.get("M2N2_TOKEN", "")
    token_file = os.environ.get("M2N2_TOKEN_FILE", "")
    if not token and token_file:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
    return {
        "url": os.environ.get("M2N2_URL", "http://127.0.0.1:8765").rstrip("/"),
        "token": token,
        "timeout": float(os.environ.get("M2N2_TIMEOUT", "60")),
    }


def points(data, key):
    value = data.get(key) or []
    if not isinstance(value, list) or len(value) > MAX_POINTS:
        raise BadRequest("%s must be a list of at most %d [x, y] points" % (key, MAX_POINTS))
    out = []
    for p in value:
        if (not isinstance(p, (list, tuple)) or len(p) != 2
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)):
            raise BadRequest("%s: each point must be [x, y]" % key)
        out.append((float(p[0]), float(p[1])))
    return out


def bbox(data):
    box = data.get("obj_bbox")
    if box is None:
        return None
    try:
        (x1, y1), (x2, y2) = box
        return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
    except (TypeError, ValueError):
        raise BadRequest("obj_bbox must be [[x1, y1], [x2, y2]]")


def interact_request(data):
    """The body of POST /api/v1/interact for a CVAT request (threshold is not used:
    M2N2 chooses its own boundary)."""
    if not isinstance(data, dict) or not isinstance(data.get("image"), str):
        raise BadRequest("the request needs \"image\" (base64)")
    pos, neg, box = points(data, "pos_points"), points(data, "neg_points"), bbox(data)
    if not pos and box:  # a box alone: its centre is the positive click
        pos = [((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)]
    if not pos:
        raise BadRequest("at least one positive point is needed")
    clicks = [{"x": x, "y": y, "positive": True} for x, y in pos]
    clicks += [{"x": x, "y": y, "positive": False} for x, y in neg]
    return {"image_base64": data["image"], "clicks": clicks, "format": "rle"}


def call_server(cfg, body):
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
        raise ServerError(e.code, "m2n2 serve: HTTP %d %s" % (e.code, message))
    except (urllib.error.URLError, OSError) as e:
        raise ServerError(502, "m2n2 serve at %s: %s" % (cfg["url"], e))


def coco_rle_counts(s):
    """The run lengths of COCO's compressed RLE string (pycocotools' rleFrString)."""
    counts, i = [], 0
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
    return counts


def mask_rows(rle, box=None):
    """COCO RLE (column-major runs) -> rows of 0/1, cleared outside the box if given."""
    h, w = rle["size"]
    flat, value = [], 0
    for n in coco_rle_counts(rle["counts"]):
        flat.extend([value] * n)
        value = 1 - value
    if len(flat) != h * w:
        raise ServerError(502, "m2n2 serve: RLE of %d pixels for a %dx%d mask" % (len(flat), w, h))
    cols = [flat[x * h:(x + 1) * h] for x in range(w)]
    rows = [list(r) for r in zip(*cols)]
    if box:
        x1, y1, x2, y2 = box
        rows = [[v if x1 <= x <= x2 and y1 <= y <= y2 else 0 for x, v in enumerate(r)] for y, r in enumerate(rows)]
    return rows


def segment(cfg, data):
    answer = call_server(cfg, interact_request(data))
    return {"mask": mask_rows(answer["rle"], bbox(data))}


def init_context(context):
    context.user_data.m2n2 = config()
    context.logger.info("m2n2 interactor: server " + context.user_data.m2n2["url"])


def handler(context, event):
    body, status = event.body, 200
    try:
        data = json.loads(body) if isinstance(body, (bytes, str)) else body
        answer = segment(context.user_data.m2n2, data)
    except ValueError as e:
        answer, status = {"error": "request is not JSON: %s" % e}, 400
    except BadRequest as e:
        answer, status = {"error": str(e)}, 400
    except ServerError as e:
        answer, status = {"error": str(e)}, e.status if 400 <= e.status < 600 else 502
    if status != 200:
        context.logger.warn(answer["error"])
    return context.Response(body=json.dumps(answer), headers={}, content_type="application/json",
                            status_code=status)
