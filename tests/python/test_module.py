"""The Python module against the command line, its errors, threads and memory."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import m2n2
from conftest import ROOT, read_mask, read_rgb, run_cli, smooth_attention

EXAMPLES = os.path.join(ROOT, "examples")
GRID = 16


def small_image(h=96, w=128, seed=1):
    """Two coloured halves with noise: masks follow the attention's two halves."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 40, 40)
    img[:, w // 2:] = (30, 60, 190)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def att_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("att")
    a = smooth_attention(GRID, GRID)
    path = d / "att.npy"
    np.save(path, a)
    img = small_image()
    import cv2

    cv2.imwrite(str(d / "img.png"), img[:, :, ::-1])
    return a, path, d / "img.png", img


def python_child(code):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_engine_masks_equal_cli_on_the_examples(m2n2_bin, tmp_path):
    run_cli(m2n2_bin, "segment", "--clicks", os.path.join(EXAMPLES, "clicks.json"), "--out", tmp_path, "--no-cache", "-q")
    with open(os.path.join(EXAMPLES, "clicks.json")) as f:
        spec = json.load(f)
    engine = m2n2.Engine()
    compared = 0
    for entry in spec["images"]:
        session = engine.open(read_rgb(os.path.join(EXAMPLES, entry["image"])), name=entry["image"])
        stem = os.path.splitext(os.path.basename(entry["image"]))[0]
        for obj in entry["objects"]:
            clicks = [(c["x"], c["y"], c["positive"]) for c in obj["clicks"]]
            r = session.segment(clicks)
            cli = read_mask(tmp_path / stem / (obj["id"] + ".png"))
            assert r.mask.dtype == np.bool_ and r.mask.shape == cli.shape
            assert np.array_equal(r.mask, cli), obj["id"]
            assert r.soft.dtype == np.float32 and r.soft.shape == cli.shape
            assert len(r.choices) == len(clicks)
            compared += 1
    assert compared == 4


def test_numpy_attention_equals_file_source(m2n2_bin, att_file, tmp_path):
    a, path, img_path, img = att_file
    clicks = [(30, 40, True), (100, 50, False)]
    cli_args = ["segment", "--image", img_path, "--source", "file:%s" % path, "--no-cache", "-q"]
    for c in clicks:
        cli_args += ["--click", "%d,%d,%s" % (c[0], c[1], "+" if c[2] else "-")]
    run_cli(m2n2_bin, *cli_args, "--out", tmp_path / "cli.png")
    cli = read_mask(tmp_path / "cli.png")
    assert 0 < cli.sum() < cli.size
    engine = m2n2.Engine(source="file:%s" % path)
    same_source = engine.open(img).segment(clicks).mask
    assert np.array_equal(same_source, cli)
    engine = m2n2.Engine()
    import torch

    forms = {
        "(h,w,h,w)": a,
        "(N,N)": a.reshape(GRID * GRID, GRID * GRID),
        "torch CPU tensor": torch.from_numpy(a),
        "dict": {"layer": {"attention": a, "weight": 1.0}},
        "dict, zero-weight coarse layer": {"fine": a, "coarse": {"attention": smooth_attention(4, 4), "weight": 0.0}},
    }
    for label, att in forms.items():
        assert np.array_equal(engine.open(img, attention=att).segment(clicks).mask, cli), label
    # float16 as a float16 .npy file reads it
    np.save(tmp_path / "att16.npy", a.astype(np.float16))
    run_cli(m2n2_bin, *cli_args[:3], "--source", "file:%s" % (tmp_path / "att16.npy"), "--no-cache", "-q",
            *cli_args[7:], "--out", tmp_path / "cli16.png")
    m16 = engine.open(img, attention=a.astype(np.float16)).segment(clicks).mask
    assert np.array_equal(m16, read_mask(tmp_path / "cli16.png"))


def test_session_maps_and_whole_image_methods(att_file):
    a, _, _, img = att_file
    s = m2n2.Engine().open(img, attention=a, name="halves")
    assert not s.prepared and s.size == (img.shape[1], img.shape[0]) and s.name == "halves"
    mm = s.markov_map(30, 40)
    assert mm.shape == (GRID, GRID) and mm.dtype == np.float32
    d = s.distance_map(30, 40)
    assert d.shape == img.shape[:2] and 0 <= d.min() and d.max() <= 1
    assert s.prepared and s.memory_bytes > a.nbytes
    t = s.timings
    assert set(t) == {"attention", "operator", "table", "total"} and t["total"] > 0


def test_predictor_is_the_session_in_sam_shapes(att_file):
    a, _, _, img = att_file
    engine = m2n2.Engine()
    p = m2n2.Predictor(engine)
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(np.array([[30, 40]]), np.array([1]))
    p.set_image(img, attention=a)
    masks, scores, soft = p.predict(np.array([[30, 40], [100, 50]]), np.array([1, 0]), multimask_output=False)
    ref = engine.open(img, attention=a).segment([(30, 40, True), (100, 50, False)])
    assert masks.shape == (1,) + img.shape[:2] and masks.dtype == np.bool_
    assert scores.shape == (1,) and soft.shape == (1,) + img.shape[:2]
    assert np.array_equal(masks[0], ref.mask) and np.array_equal(soft[0], ref.soft)
    p.set_image(np.ascontiguousarray(img[:, :, ::-1]), image_format="BGR", attention=a)
    assert np.array_equal(p.predict(np.array([[30, 40], [100, 50]]), np.array([1, 0]))[0][0], ref.mask)
    with pytest.raises(ValueError, match="point_coords"):
        p.predict(np.array([30, 40]), np.array([1]))


def test_errors_are_value_or_runtime_errors_with_the_library_messages(att_file, tmp_path):
    a, path, _, img = att_file
    engine = m2n2.Engine()
    cases = [
        (lambda: engine.open(img.astype(np.float32), attention=a), ValueError, "image: expected an HxWx3 uint8"),
        (lambda: engine.open(img, attention=a.astype(np.float64)), ValueError, "attention must be float32 or float16"),
        (lambda: engine.open(img, attention=np.ones((6, 6), np.float32) / 6), ValueError,
         "N = 6 is not a square number of tokens"),
        (lambda: engine.open(img, attention=np.ones((4, 5), np.float32)), ValueError, "must be square"),
        (lambda: engine.open(img, attention=a * 2), ValueError, "row 0 sums to"),
        (lambda: engine.open(img, attention={}), ValueError, "attention: no maps"),
        (lambda: engine.open(img, attention="x"), ValueError, "expected an array"),
        (lambda: engine.open(img, attention=a).segment([(500, 5, True)]), ValueError,
         "click \\(500,5\\) is outside the 128x96 image"),
        (lambda: engine.open(img, attention=a).segment([]), ValueError, "at least one click"),
        (lambda: m2n2.Engine(temperature=-1), ValueError, "temperature must be"),
        (lambda: m2n2.Engine(tempreature=1), ValueError, "tempreature: unknown M2N2 parameter"),
        (lambda: m2n2.Engine(device="tpu"), ValueError, "tpu"),
        (lambda: m2n2.Engine(source="file:" + str(tmp_path / "none.npy")), ValueError, "none.npy: no such file"),
        (lambda: m2n2.Engine(source="nonsense:x"), ValueError, "nonsense"),
        (lambda: engine.open(img, attention=a).ncut(policy="sometimes"), ValueError, "sometimes"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()
    # Not the caller's argument: RuntimeError (the memory limit is one).
    with pytest.raises(RuntimeError, match="memory") as e:
        m2n2.Engine(max_memory_bytes=1000).open(img, attention=a).prepare()
    assert not isinstance(e.value, ValueError) and "\n" not in str(e.value)
    # A failing progress callable: its own exception comes back.
    def progress(stage, fraction):
        raise KeyError("from the callback")
    with pytest.raises(KeyError, match="from the callback"):
        m2n2.Engine(progress=progress).open(img, attention=a).prepare()


def test_progress_reports_the_stages(att_file):
    a, _, _, img = att_file
    seen = []
    m2n2.Engine(progress=lambda stage, f: seen.append((stage, f))).open(img, attention=a).prepare()
    assert [s for s, _ in seen] == ["attention", "operator", "table", "ready"]
    assert seen[-1][1] == 1.0


def test_a_python_thread_runs_while_a_session_prepares():
    """With the GIL held through prepare() the counter thread could not run at all:
    the switch interval is raised so that the interpreter never takes the GIL away
    from the main thread on its own, and the counter gives it back with sleep(0)."""
    img = read_rgb(os.path.join(EXAMPLES, "images", "kite.png"))
    session = m2n2.Engine().open(img)
    count = [0]
    stop = threading.Event()

    def counter():
        while not stop.is_set():
            count[0] += 1
            if count[0] % 100 == 0:
                time.sleep(0)

    old = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    t = threading.Thread(target=counter)
    try:
        t.start()
        time.sleep(0.05)  # the counter is running
        before = count[0]
        session.prepare()
        during = count[0] - before
    finally:
        stop.set()
        sys.setswitchinterval(old)
        t.join()
    assert session.prepared
    assert during > 0


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_200_sessions_opened_and_dropped_do_not_grow_memory():
    a = smooth_attention(24, 24)  # 1.3 MB of attention per session, kept by it
    img = small_image(64, 64)
    engine = m2n2.Engine(ipf_iterations=2, max_iterations=20)  # what is held, at a fraction of the work

    def one():
        s = engine.open(img, attention=a)
        s.segment([(10, 10, True)])
        return s.memory_bytes

    held = one()
    for _ in range(20):
        one()
    base = rss_bytes()
    for _ in range(200):
        one()
    grown = rss_bytes() - base
    # A leaked session would hold `held` bytes each: 200 of them, hundreds of MB.
    assert held > 3e6
    assert grown < 20 * held, (grown, held)


def test_two_sessions_used_from_two_threads(att_file):
    a, _, _, img = att_file
    b = smooth_attention(GRID, GRID, seed=5, sharp=2.0)
    clicks = [[(30, 40, True)], [(100, 50, True), (20, 20, False)]]
    serial_engine = m2n2.Engine()
    expected = [serial_engine.open(img, attention=x).segment(c).mask for x, c in zip((a, b), clicks)]
    for engines in ([m2n2.Engine()] * 2, [m2n2.Engine(), m2n2.Engine()]):  # one engine shared, and one each
        sessions = [e.open(img, attention=x) for e, x in zip(engines, (a, b))]
        results, errors = [None, None], []

        def work(i):
            try:
                for _ in range(3):
                    results[i] = sessions[i].segment(clicks[i]).mask
                    sessions[i].clear_points()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for r, e in zip(results, expected):
            assert np.array_equal(r, e)


def test_libtorch_is_loaded_only_for_a_torchscript_source(att_file):
    a, path, _, _ = att_file
    code = """
import numpy as np, m2n2
s = m2n2.Engine().open(np.zeros((32, 32, 3), np.uint8), attention=np.load(%r))
s.segment([(3, 3, True)])
maps = open('/proc/self/maps').read()
print('libtorch' in maps, 'm2n2_torch' in maps)
""" % str(path)
    p = python_child(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "False"]


def test_torch_first_then_m2n2_with_a_torchscript_source(tmp_path):
    """Debian's python3-torch and the backend's LibTorch in one process: a traced
    module run by m2n2 gives the attention it returns in Python."""
    code = """
import json, sys
import numpy as np
import torch
import m2n2

class Uniformish(torch.nn.Module):
    def forward(self, image):
        x = torch.nn.functional.adaptive_avg_pool2d(image, (4, 4)).mean(1).reshape(1, 16)
        p = torch.softmax(-(x.t() - x) ** 2 * 50.0, dim=-1)
        return {"a": p}

m = torch.jit.trace(Uniformish(), torch.rand(1, 3, 32, 32), strict=False)  # check_trace walks the graph through PyTorch's pybind11
meta = {"format": "m2n2-attention/1", "model_id": "test", "input_size": [32, 32], "timestep": 0, "dtype": "fp32",
        "layers": [{"name": "a", "grid": [4, 4], "weight": 1.0}]}
torch.jit.save(m, sys.argv[1], _extra_files={"m2n2.json": json.dumps(meta)})
rng = np.random.default_rng(0)
img = rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)
e = m2n2.Engine(source="torchscript:" + sys.argv[1])
r = e.open(img).segment([(5, 5, True)])
maps = open('/proc/self/maps').read()
print(r.mask.shape, 'm2n2_torch' in maps)
"""
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["(40,", "40)", "True"]
