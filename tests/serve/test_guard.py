#!/usr/bin/env python3
"""Access control and crafted requests of `m2n2 serve`, against the real executable.

The token (none, wrong, from --token-file), the Host allow-list (DNS rebinding), cross-site
writes (simple POSTs, foreign Origin, Sec-Fetch-Site), the security headers, chunked,
length-less and oversized bodies, deeply nested JSON, and eight slow clients trickling
bytes while a normal request must still be answered within 2 s.

    python3 tests/serve/test_guard.py M2N2 SOURCE_DIR
"""
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

M2N2, ROOT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from serve_load import trickle  # noqa: E402  (a slow client, as the load script has it)
TMP = tempfile.mkdtemp(prefix="m2n2-guard-")
ENV = dict(os.environ, M2N2_CACHE_DIR=os.path.join(TMP, "cache"), OMP_NUM_THREADS="1")
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


def start(images, out, *args):
    log = open(os.path.join(TMP, "serve-%d.log" % time.monotonic_ns()), "w+")
    proc = subprocess.Popen([M2N2, "serve", "--images", images, "--out", out, "--port", "0", *args],
                            stdout=subprocess.DEVNULL, stderr=log, env=ENV)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("server exited: " + open(log.name).read())
        for line in open(log.name):
            if "serving on http://" in line:
                url = line.split("serving on ", 1)[1].split()[0]
                port = int(url.split("://", 1)[1].split("/")[0].rsplit(":", 1)[1])
                return proc, port, url.split("?token=", 1)[1], log
        time.sleep(0.05)
    raise AssertionError("no URL printed")


def raw(port, data, timeout=10, linger=None):
    """Sends raw bytes; returns (status, headers dict (lower-case names), body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    if linger is not None:
        time.sleep(linger)
    chunks = []
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
            resp = b"".join(chunks)
            if b"\r\n\r\n" in resp:
                head, body = resp.split(b"\r\n\r\n", 1)
                length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
    except socket.timeout:
        pass
    s.close()
    resp = b"".join(chunks)
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return status, headers, body


def request(port, method, path, headers=None, body=b""):
    h = {"Host": "127.0.0.1:%d" % port}
    h.update(headers or {})
    if body or method == "POST":
        h.setdefault("Content-Length", str(len(body)))
    text = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h.items() if kv[1] is not None)
    text += "Connection: close\r\n\r\n"
    return raw(port, text.encode() + body)


def refused(result, status, what):
    st, headers, body = result
    check(st == status, "%s: status %d, expected %d: %r" % (what, st, status, body[:200]))
    j = json.loads(body)
    check(isinstance(j.get("error"), str) and j["error"] and "\n" not in j["error"], "%s: one-line JSON error %r" % (what, j))


def main():
    images = os.path.join(TMP, "images")
    os.makedirs(images)
    shutil.copy(os.path.join(ROOT, "examples/images", "fruit.png"), images)
    out = os.path.join(TMP, "out")
    proc, port, token, log = start(images, out, "--allow-host", "annotate.example", "--max-body", "64K")
    auth = {"Authorization": "Bearer " + token}
    post = dict(auth, **{"Content-Type": "application/json"})
    try:
        check(len(token) >= 32, "a long random token: %r" % token)
        # ---- the token
        st, h, body = request(port, "GET", "/health")
        check(st == 200 and json.loads(body) == {"status": "ok"}, "/health without a token: %d %r" % (st, body))
        refused(request(port, "GET", "/api/images"), 401, "no token")
        refused(request(port, "GET", "/api/images", {"Authorization": "Bearer " + token[:-1] + "x"}), 401, "wrong token")
        refused(request(port, "GET", "/api/export/coco", {"Authorization": "Basic " + token}), 401, "another scheme")
        st, h, body = request(port, "GET", "/api/images", auth)
        check(st == 200 and json.loads(body)["images"][0]["name"] == "fruit.png", "with the token: %d" % st)
        # ---- security headers, on the API and on the page
        for path in ("/api/images", "/"):
            st, h, _ = request(port, "GET", path, auth)
            check(h.get("x-frame-options") == "DENY", "X-Frame-Options on " + path)
            check("frame-ancestors 'none'" in h.get("content-security-policy", ""), "CSP on " + path)
            check(h.get("x-content-type-options") == "nosniff", "nosniff on " + path)
            check(h.get("referrer-policy") == "no-referrer", "Referrer-Policy on " + path)
        check(request(port, "GET", "/api/images", auth)[1].get("cache-control") == "no-store", "no-store on the API")
        # ---- Host allow-list (DNS rebinding)
        for host in ("evil.example:%d" % port, "evil.example", "127.0.0.1.evil.example:%d" % port, "localhost:1", ""):
            refused(request(port, "GET", "/api/images", dict(auth, Host=host)), 403, "Host %r" % host)
            refused(request(port, "GET", "/", {"Host": host}), 403, "Host %r on the page" % host)
        for host in ("localhost:%d" % port, "[::1]:%d" % port, "127.0.0.1:%d" % port, "annotate.example", "Annotate.Example:8080"):
            check(request(port, "GET", "/api/images", dict(auth, Host=host))[0] == 200, "Host %r is allowed" % host)
        # ---- cross-site writes: nothing written
        save = json.dumps({"image": "fruit.png", "objects": [{"id": "x", "clicks": [{"x": 10, "y": 10}]}]}).encode()
        refused(request(port, "POST", "/api/save", dict(auth, **{"Content-Type": "text/plain"}), save), 415, "text/plain POST")
        refused(request(port, "POST", "/api/save", dict(auth, **{"Content-Type": "application/x-www-form-urlencoded"}), save),
                415, "form POST")
        refused(request(port, "POST", "/api/save", {"Content-Type": "text/plain"}, save), 401, "simple POST, no token")
        refused(request(port, "POST", "/api/save", dict(post, Origin="http://evil.example:%d" % port), save), 403, "foreign Origin")
        refused(request(port, "POST", "/api/save", dict(post, Origin="null"), save), 403, "Origin null")
        refused(request(port, "POST", "/api/delete", dict(post, **{"Sec-Fetch-Site": "cross-site"}),
                        json.dumps({"image": "fruit.png", "id": "x"}).encode()), 403, "Sec-Fetch-Site: cross-site")
        check(not os.path.exists(out), "nothing written by refused requests")
        # Same origin is fine (the page's own calls carry it).
        st, _, body = request(port, "POST", "/api/prepare", dict(post, Origin="http://127.0.0.1:%d" % port,
                                                                     **{"Sec-Fetch-Site": "same-origin"}),
                              json.dumps({"image": "fruit.png"}).encode())
        check(st == 200, "same-origin POST: %d %r" % (st, body))
        # ---- bodies: chunked, length-less, too large (refused before being read)
        chunk = b"x" * 4096
        chunked = (b"POST /api/prepare HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % (port, token.encode()))
        chunked += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(64)) + b"0\r\n\r\n"
        refused(raw(port, chunked), 411, "chunked body over --max-body")
        lengthless = (b"POST /api/prepare HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                      b"Content-Type: application/json\r\nConnection: close\r\n\r\n" % (port, token.encode())) + chunk * 64
        refused(raw(port, lengthless), 411, "length-less body")
        t0 = time.monotonic()
        big = (b"POST /api/prepare HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
               b"Content-Type: application/json\r\nContent-Length: 268435456\r\n\r\n" % (port, token.encode()))
        refused(raw(port, big), 413, "Content-Length over --max-body")
        check(time.monotonic() - t0 < 5, "413 without reading the body")
        # ---- deeply nested JSON: a one-line 400, the server goes on
        # Valid JSON objects (within --max-body) that a parser without the cap takes whole.
        for depth in (65, 30000):
            deep = b'{"image": "fruit.png", "x": ' + b"[" * depth + b"]" * depth + b"}"
            refused(request(port, "POST", "/api/prepare", post, deep), 400, "JSON nested %d deep" % depth)
            refused(request(port, "POST", "/api/segment", post, b'{"image": "fruit.png", "clicks": ' + b"[" * depth +
                            b"]" * depth + b"}"), 400, "clicks nested %d deep" % depth)
        st, _, body = request(port, "POST", "/api/prepare", post, b'{"image": "fruit.png", "x": ' + b"[" * 60 + b"]" * 60 + b"}")
        check(st == 200, "nesting within the cap is fine: %d %r" % (st, body))
        # ---- eight slow clients trickling bytes: a normal request still answered within 2 s
        stop = threading.Event()

        slow = [threading.Thread(target=trickle, args=(port, stop), daemon=True) for _ in range(8)]
        [t.start() for t in slow]
        time.sleep(3)
        worst = 0
        for _ in range(5):
            t0 = time.monotonic()
            st, _, _ = request(port, "GET", "/api/images", auth)
            worst = max(worst, time.monotonic() - t0)
            check(st == 200, "answered while slow clients trickle: %d" % st)
            time.sleep(0.5)
        stop.set()
        check(worst < 2.0, "answered within 2 s while 8 slow clients trickle: %.2f s" % worst)
        proc.send_signal(signal.SIGINT)
        check(proc.wait(timeout=60) == 0, "exit 0 after SIGINT")
        # ---- SIGTERM while an image is being prepared: exit 0 within a few seconds
        big = os.path.join(TMP, "big")
        os.makedirs(big)
        shutil.copy(os.path.join(ROOT, "examples/images", "kite.png"), big)
        proc, port, token, log = start(big, out, "--no-cache")
        request(port, "POST", "/api/prepare", {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
                json.dumps({"image": "kite.png"}).encode())
        for _ in range(200):
            st, _, body = request(port, "GET", "/api/status?image=kite.png", {"Authorization": "Bearer " + token})
            if json.loads(body)["state"] == "preparing":
                break
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        check(code == 0 and time.monotonic() - t0 < 4, "SIGTERM during a preparation: exit %d after %.1f s" % (code, time.monotonic() - t0))
        # ---- --token-file
        tf = os.path.join(TMP, "token")
        with open(tf, "w") as f:
            f.write("s3cret-token-of-a-team-0123456789\n")
        proc, port, token, log = start(images, out, "--token-file", tf)
        check(token == "s3cret-token-of-a-team-0123456789", "the token of --token-file: %r" % token)
        check(request(port, "GET", "/api/info", {"Authorization": "Bearer " + token})[0] == 200, "token-file token accepted")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        with open(tf, "w") as f:
            f.write("short\n")
        r = subprocess.run([M2N2, "serve", "--images", images, "--token-file", tf, "--port", "0"], env=ENV,
                           capture_output=True, timeout=120)
        check(r.returncode == 2 and b"--token-file" in r.stderr, "a short token is refused: %d %r" % (r.returncode, r.stderr))
    finally:
        if proc.poll() is None:
            proc.kill()
    print("serve guard ok: %d checks" % checks)
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
