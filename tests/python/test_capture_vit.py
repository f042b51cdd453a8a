"""m2n2.capture.vit against the pinned DINOv2 sources (../shared/vendor) with a tiny
random ViT (patch 14, 2 blocks, one register): the maps captured in Python equal the
exported archive's, and the mask from them equals the command line's from the archive."""
import copy
import json
import os
import sys
import warnings
from functools import partial

import numpy as np
import pytest

from conftest import ROOT, cli_mask, read_rgb

SHARED = os.environ.get("M2N2_SHARED", os.path.join(ROOT, "..", "shared"))
DINO = os.path.join(SHARED, "vendor", "dinov2-b8931f7")
if not os.path.isdir(os.path.join(DINO, "dinov2")):
    pytest.skip("needs the pinned DINOv2 sources in " + DINO + " (not beside this clone)", allow_module_level=True)
sys.path[:0] = [DINO, os.path.join(ROOT, "scripts")]
os.environ["XFORMERS_DISABLED"] = "1"

import torch  # noqa: E402
from dinov2.layers import MemEffAttention, NestedTensorBlock  # noqa: E402
from dinov2.models.vision_transformer import DinoVisionTransformer  # noqa: E402

import export_vit_attention as ev  # noqa: E402
import m2n2  # noqa: E402
from m2n2 import capture  # noqa: E402

R = 8
IMAGE = os.path.join(ROOT, "examples", "images", "kite.png")
CLICKS = [(250, 110, True), (40, 40, False)]


def tiny_vit():
    torch.manual_seed(4)
    m = DinoVisionTransformer(patch_size=14, img_size=56, depth=2, embed_dim=32, num_heads=2, mlp_ratio=2,
                              num_register_tokens=1, block_chunks=0, init_values=1.0, interpolate_antialias=True,
                              interpolate_offset=0.0, block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vit") / "tiny-vit.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced, meta, _ = ev.export(copy.deepcopy(tiny_vit()), "dinov2-hub", 14, 1, R, [0, -1], [0.5, 0.5], [],
                                    model_id="tiny")
    torch.jit.save(traced, path, _extra_files={"m2n2.json": meta})
    assert [l["name"] for l in json.loads(meta)["layers"]] == ["layer.0", "layer.1"]
    return path


def captured():
    return capture.vit(tiny_vit(), read_rgb(IMAGE), resolution=R, layers=[0, -1], weights=[0.5, 0.5])


def test_captured_vit_maps_equal_the_archive(archive):
    maps = captured()
    x = capture.image_tensor(read_rgb(IMAGE), (14 * R, 14 * R))
    with torch.no_grad():
        ref = torch.jit.load(archive)(x)
    assert list(maps) == ["layer.0", "layer.1"]
    for name, m in maps.items():
        assert m["attention"].shape == (R * R, R * R) and m["weight"] == 0.5
        assert float(np.abs(m["attention"] - ref[name].numpy()).max()) < 1e-6, name


def test_mask_from_python_vit_capture_equals_cli_mask_from_archive(archive, m2n2_bin, tmp_path):
    cli = cli_mask(m2n2_bin, IMAGE, "torchscript:" + archive, CLICKS, tmp_path / "cli.png")
    mask = m2n2.Engine().open(read_rgb(IMAGE), attention=captured()).segment(CLICKS).mask
    assert 0 < cli.sum() < cli.size
    assert np.array_equal(mask, cli)
