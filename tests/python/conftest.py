"""Shared fixtures of the Python module's tests. Run as ctest's py.module does:

    PYTHONPATH=build/python M2N2_BIN=build/m2n2 /usr/bin/python3 -m pytest tests/python

M2N2_SHARED (default: ../shared beside the clone) holds the pinned diffusers for the
capture tests, which are skipped without it."""
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def m2n2_bin():
    path = os.environ.get("M2N2_BIN", os.path.join(ROOT, "build", "m2n2"))
    assert os.path.exists(path), "the m2n2 binary (M2N2_BIN) is needed: " + path
    return path


@pytest.fixture(scope="session")
def shared_dir():
    return os.environ.get("M2N2_SHARED", os.path.join(ROOT, "..", "shared"))


def run_cli(binary, *args):
    """Runs `m2n2 ARGS...`; fails the test with its stderr when it fails."""
    p = subprocess.run([binary] + [str(a) for a in args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def read_mask(path):
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert m is not None, path
    return m > 0


def cli_mask(binary, image, source, clicks, out):
    """The mask of `m2n2 segment` (no cache, CPU) for clicks (x, y, positive)."""
    args = ["segment", "--image", image, "--source", source, "--no-cache", "-q", "--device", "cpu", "--out", out]
    for x, y, positive in clicks:
        args += ["--click", "%g,%g,%s" % (x, y, "+" if positive else "-")]
    run_cli(binary, *args)
    return read_mask(out)


def read_rgb(path):
    import cv2

    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def smooth_attention(h, w, seed=0, sharp=4.0):
    """A valid (h,w,h,w) float32 attention: row-softmax of local affinities plus noise,
    with structure (two halves) so that masks are not trivial."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    pos = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float64)
    d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    side = (xs.ravel() < w // 2).astype(np.float64)
    logits = -d2 / sharp - 3.0 * (side[:, None] != side[None, :]) + 0.3 * rng.standard_normal(d2.shape)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p.astype(np.float32).reshape(h, w, h, w)
