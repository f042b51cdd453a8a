#!/usr/bin/env python3
"""Draws the shipped example images (examples/images/*.png) and their click file.
Procedural, so the repository carries no third-party pictures:

    /usr/bin/python3 scripts/make_examples.py
"""
import json
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "examples")


def textured(h, w, base, amp, seed, scale=6):
    rng = np.random.default_rng(seed)
    small = rng.normal(0, 1, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
    tex = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w]
    fine = rng.normal(0, 1, (h, w, 3)).astype(np.float32)
    return np.clip(np.array(base, np.float32) + amp * tex + 0.3 * amp * fine, 0, 255)


def fruit_bowl():
    h, w = 360, 480
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = textured(h, w, (0, 0, 0), 6, 1)
    wall = np.stack([150 + 40 * yy / h, 170 + 30 * yy / h, 190 - 20 * yy / h], -1)
    img += wall
    table = yy > 240
    img[table] = textured(h, w, (120, 80, 50), 14, 2)[table]
    layers = [
        ((150, 230), (90, 55), (200, 200, 195), 5),    # bowl
        ((120, 175), (45, 45), (205, 40, 35), 3),      # red apple
        ((185, 170), (40, 42), (235, 190, 40), 4),     # orange
        ((330, 190), (38, 70), (60, 140, 55), 6),      # green bottle
    ]
    for i, (c, ax, col, seed) in enumerate(layers):
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, c, ax, 0, 0, 360 if i else 180, 255, -1)
        if i == 0:
            cv2.ellipse(m, (c[0], c[1] - 2), (ax[0], 14), 0, 0, 360, 255, -1)
        shade = 1.0 - 0.35 * np.clip(((xx - c[0]) / ax[0] + (yy - c[1]) / ax[1]) * 0.5, -1, 1)
        tex = textured(h, w, col, 7, seed) * shade[..., None]
        img[m > 0] = tex[m > 0]
    return cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)  # drawn in RGB


def kite():
    h, w = 300, 420
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([235 - 60 * yy / h, 200 - 40 * yy / h, 120 + 20 * yy / h], -1)  # BGR
    img = sky + textured(h, w, (0, 0, 0), 4, 7)
    grass = yy > 230 + 8 * np.sin(xx / 37.0)
    img[grass] = textured(h, w, (40, 150, 70), 16, 8)[grass]
    pts = np.array([[250, 40], [310, 110], [250, 200], [190, 110]], np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [pts], 255)
    kite_col = textured(h, w, (40, 40, 210), 8, 9)
    kite_col[(xx > 250)] = textured(h, w, (30, 200, 230), 8, 10)[(xx > 250)]
    img[m > 0] = kite_col[m > 0]
    cv2.polylines(img, [np.array([[250, 200], [230, 240], [215, 280]], np.int32)], False, (60, 60, 60), 2, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    cv2.imwrite(os.path.join(OUT, "images", "fruit.png"), fruit_bowl())
    cv2.imwrite(os.path.join(OUT, "images", "kite.png"), kite())
    clicks = {"images": [
        {"image": "images/fruit.png", "objects": [
            {"id": "apple", "clicks": [{"x": 120, "y": 172, "positive": True}]},
            {"id": "bottle", "clicks": [{"x": 330, "y": 180, "positive": True}, {"x": 330, "y": 300, "positive": False}]},
            {"id": "orange", "clicks": [{"x": 190, "y": 165, "positive": True}, {"x": 122, "y": 172, "positive": False}]}]},
        {"image": "images/kite.png", "objects": [
            {"id": "kite", "clicks": [{"x": 250, "y": 110, "positive": True}]}]}]}
    with open(os.path.join(OUT, "clicks.json"), "w") as f:
        json.dump(clicks, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
