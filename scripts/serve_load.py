#!/usr/bin/python3
"""Load measurement of `m2n2 serve` on loopback: click latency on prepared images.

Starts `m2n2 serve` on copies of the shipped examples resized to --width x --height
(default 854x480), then
  1. sequential: one client, one image at a time: waits for the preparation, then sends
     --clicks requests, each with one more click (as the page does: every request carries
     all clicks of the object; only the newest point's Markov-map is new);
  2. slow clients: the same clicks on the prepared image while --slow clients (default 8)
     each trickle a byte every 2 s into a request they never finish;
  3. concurrent: --clients clients at once, each on its own image, the same protocol.
Every request is bounded by --timeout seconds and the whole run by --budget seconds.
Prints one JSON line (medians, 90th percentiles, preparation times) on stdout.

    /usr/bin/python3 scripts/serve_load.py build/m2n2 [--clicks 10] [--clients 4] [-- serve flags]
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import cv2


TOKEN = ""  # the server's, from the URL it prints


def post(port, path, body, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.perf_counter()
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", "Authorization": "Bearer " + TOKEN})
    r = conn.getresponse()
    data = r.read()
    dt = time.perf_counter() - t0
    conn.close()
    if r.status != 200:
        raise RuntimeError("%s: HTTP %d %s" % (path, r.status, data[:200]))
    return json.loads(data), dt


def get(port, path, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
    data = conn.getresponse().read()
    conn.close()
    return json.loads(data)


def trickle(port, stop):
    """A slow client: opens a request and sends one byte of it every 2 s, again and again."""
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
            while not stop.is_set():
                s.sendall(b"X")
                stop.wait(2.0)
            s.close()
        except OSError:
            stop.wait(0.1)


def session(port, image, size, n_clicks, seed, timeout, deadline):
    """Prepares `image`, then sends n_clicks growing click lists; returns latencies."""
    t0 = time.perf_counter()
    post(port, "/api/prepare", {"image": image}, timeout)
    while True:
        s = get(port, "/api/status?image=" + image, timeout)
        if s["state"] == "ready":
            break
        if s["state"] == "failed" or time.perf_counter() > deadline:
            raise RuntimeError("%s: %s" % (image, s))
        time.sleep(0.02)
    prep = time.perf_counter() - t0
    rng = random.Random(seed)
    clicks, lat = [], []
    for i in range(n_clicks):
        if time.perf_counter() > deadline:
            break
        clicks.append({"x": rng.randrange(size[0]), "y": rng.randrange(size[1]), "positive": i % 3 != 2})
        _, dt = post(port, "/api/segment", {"image": image, "clicks": clicks}, timeout)
        lat.append(dt)
    return {"prepare_s": prep, "seconds": s["seconds"], "latencies": lat}


def summary(lat):
    lat = sorted(lat)
    return {"n": len(lat), "median_s": round(statistics.median(lat), 4),
            "p90_s": round(lat[min(len(lat) - 1, int(0.9 * len(lat)))], 4), "max_s": round(lat[-1], 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("m2n2")
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--clicks", type=int, default=10, help="requests per client")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients")
    ap.add_argument("--slow", type=int, default=8, help="slow clients trickling bytes in the second phase")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per request")
    ap.add_argument("--budget", type=float, default=600, help="seconds for the whole run")
    ap.add_argument("serve_args", nargs="*", help="more flags for m2n2 serve (after --)")
    a = ap.parse_args()
    deadline = time.perf_counter() + a.budget
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    tmp = tempfile.mkdtemp(prefix="m2n2-load-")
    images = os.path.join(tmp, "images")
    os.makedirs(images)
    names = []
    n_images = 1 + a.clients
    for i in range(n_images):  # distinct images: flipped/rotated copies of the examples
        src = cv2.imread(os.path.join(root, "examples/images", ["fruit.png", "kite.png"][i % 2]))
        src = cv2.flip(src, [1, 0, -1, 1, 0][(i // 2) % 5]) if i >= 2 else src
        name = "img%02d.png" % i
        cv2.imwrite(os.path.join(images, name), cv2.resize(src, (a.width, a.height), interpolation=cv2.INTER_CUBIC))
        names.append(name)
    log = open(os.path.join(tmp, "serve.log"), "w+")
    cmd = [a.m2n2, "serve", "--images", images, "--out", os.path.join(tmp, "out"), "--port", "0", "--no-cache", *a.serve_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        port = None
        while port is None and time.perf_counter() < deadline:
            log.flush()
            for line in open(log.name):
                if "serving on http://127.0.0.1:" in line:
                    url = line.split("serving on ", 1)[1].split()[0]
                    port = int(url.rsplit(":", 1)[1].split("/")[0])
                    global TOKEN
                    TOKEN = url.split("?token=", 1)[1]
            if proc.poll() is not None:
                raise RuntimeError("server exited: " + open(log.name).read())
            time.sleep(0.05)
        size = (a.width, a.height)
        seq = session(port, names[0], size, a.clicks, 1, a.timeout, deadline)
        stop = threading.Event()
        slow = [threading.Thread(target=trickle, args=(port, stop), daemon=True) for _ in range(a.slow)]
        [t.start() for t in slow]
        time.sleep(2.5)  # every slow client is in
        try:
            with_slow = session(port, names[0], size, a.clicks, 2, a.timeout, deadline)
        finally:
            stop.set()
        results, errors = [None] * a.clients, []

        def client(k):
            try:
                results[k] = session(port, names[1 + k], size, a.clicks, 100 + k, a.timeout, deadline)
            except Exception as e:  # reported below
                errors.append(repr(e))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        [t.start() for t in threads]
        [t.join(max(1.0, deadline - time.perf_counter())) for t in threads]
        wall = time.perf_counter() - t0
        if errors:
            raise RuntimeError("; ".join(errors))
        conc = [x for r in results for x in r["latencies"]]
        out = {
            "image": "%dx%d" % size, "serve_args": a.serve_args, "cores": os.cpu_count(),
            "prepare": {"wall_s": round(seq["prepare_s"], 3), **{k: round(v, 3) for k, v in seq["seconds"].items()}},
            "sequential": summary(seq["latencies"]),
            "first_click_s": round(seq["latencies"][0], 4),
            "with_slow_clients": {"slow": a.slow, **summary(with_slow["latencies"])},
            "concurrent": {"clients": a.clients, "wall_s": round(wall, 2),
                           "prepare_wall_s": [round(r["prepare_s"], 2) for r in results], **summary(conc)},
        }
        print(json.dumps(out))
        print("serve load: sequential click median %.3f s (p90 %.3f), with %d slow clients %.3f s (p90 %.3f), "
              "%d clients median %.3f s (p90 %.3f); preparation %.2f s"
              % (out["sequential"]["median_s"], out["sequential"]["p90_s"], a.slow,
                 out["with_slow_clients"]["median_s"], out["with_slow_clients"]["p90_s"], a.clients,
                                      out["concurrent"]["median_s"], out["concurrent"]["p90_s"], seq["prepare_s"]),
              file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
