"""m2n2.capture against the pinned diffusers (../shared/vendor) with a tiny random
Stable Diffusion: the maps captured in Python equal the exported archive's, and a
mask made from them equals the command line's mask from the archive."""
import os
import sys

import numpy as np
import pytest

from conftest import ROOT, cli_mask, read_rgb

SHARED = os.environ.get("M2N2_SHARED", os.path.join(ROOT, "..", "shared"))
VENDOR = os.path.join(SHARED, "vendor")
PATHS = [os.path.join(VENDOR, "diffusers-0.31.0", "src"), os.path.join(VENDOR, "huggingface_hub-0.36.2", "src")]
if not all(os.path.isdir(p) for p in PATHS):
    pytest.skip("needs the pinned diffusers in " + VENDOR + " (not beside this clone)", allow_module_level=True)
sys.path[:0] = PATHS + [os.path.join(ROOT, "tests", "py_stubs"), os.path.join(ROOT, "tests", "py"),
                        os.path.join(ROOT, "scripts")]

import torch  # noqa: E402

import export_sd_attention as export_sd  # noqa: E402
import m2n2  # noqa: E402
import tiny_sd  # noqa: E402
from m2n2 import capture  # noqa: E402

R = 16
IMAGE = os.path.join(ROOT, "examples", "images", "fruit.png")
CLICKS = [(120, 172, True), (330, 180, True), (330, 300, False)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sd") / "tiny-sd1.pt")
    unet, vae, emb = tiny_sd.build("sd1")
    export_sd.export(unet, vae, emb, path, model_id="tiny-sd1", resolution=R, log=lambda *_: None)
    return path


def captured():
    unet, vae, emb = tiny_sd.build("sd1")  # the same random weights as the archive's
    return capture.stable_diffusion(None, read_rgb(IMAGE), resolution=R, unet=unet, vae=vae, embedding=emb)


def test_captured_maps_equal_the_archive(archive):
    maps = captured()
    assert list(maps) == capture.M2N2_LAYERS
    x = capture.image_tensor(read_rgb(IMAGE), (8 * R, 8 * R))
    with torch.no_grad():
        ref = torch.jit.load(archive)(x)
    for name, m in maps.items():
        assert m["attention"].shape == (R * R, R * R) and m["attention"].dtype == np.float32
        assert m["weight"] == 0.5
        assert float(np.abs(m["attention"] - ref[name].numpy()).max()) < 1e-6, name


def test_mask_from_python_capture_equals_cli_mask_from_archive(archive, m2n2_bin, tmp_path):
    cli = cli_mask(m2n2_bin, IMAGE, "torchscript:" + archive, CLICKS, tmp_path / "cli.png")
    mask = m2n2.Engine().open(read_rgb(IMAGE), attention=captured()).segment(CLICKS).mask
    assert 0 < cli.sum() < cli.size
    assert np.array_equal(mask, cli)


def test_capture_leaves_a_pipeline_usable_and_takes_its_dtype_and_device():
    pipe = tiny_sd.StandInPipeline("sd2")
    maps = capture.stable_diffusion(pipe, read_rgb(IMAGE), resolution=R, layers=["up_blocks.3.attentions.2"])
    (m,) = maps.values()
    assert m["weight"] == 1.0 and m["attention"].shape == (R * R, R * R)
    np.testing.assert_allclose(m["attention"].sum(1), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="one value per layer"):
        capture.stable_diffusion(pipe, read_rgb(IMAGE), resolution=R, layers=["a", "b"], weights=[1.0])
