#!/usr/bin/env python3
"""scripts/export_vit_attention.py against the real DINOv2 model code (the pinned
sources in ../shared/vendor), with tiny random-weight ViTs (patch 14, 2 blocks, C = 32,
2 heads) with and without a register.

    /usr/bin/python3 tests/py/test_export_vit.py M2N2_BINARY SOURCE_DIR SHARED_DIR

The DINOv2 code calls torch.nn.functional.scaled_dot_product_attention, which Debian's
torch 1.13 lacks; the reference run gets a stand-in computing softmax(q kᵀ / √d) v that
also records those probabilities: what the module itself computes, to compare with.
Exits 77 (ctest: skipped) with one line when SHARED_DIR/vendor is absent.
"""
import copy
import json
import os
import subprocess
import sys
import tempfile
import unittest
import warnings
from functools import partial

M2N2, ROOT, SHARED = (sys.argv[1:4] + [None] * 3)[:3]
DINO = os.path.join(SHARED or "", "vendor", "dinov2-b8931f7")
if not os.path.isdir(os.path.join(DINO, "dinov2")):
    print("skipped: needs the pinned DINOv2 sources in " + DINO + " (not beside this clone)")
    sys.exit(77)
sys.path[:0] = [DINO, os.path.join(ROOT, "scripts")]
os.environ["XFORMERS_DISABLED"] = "1"
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SEEN = []  # probabilities the stand-in computed, in call order


def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
    p = torch.softmax((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)
    SEEN.append(p)
    return p @ v


F.scaled_dot_product_attention = sdpa

from dinov2.layers import MemEffAttention, NestedTensorBlock  # noqa: E402
from dinov2.models.vision_transformer import DinoVisionTransformer  # noqa: E402

import export_vit_attention as ev  # noqa: E402

MEAN = torch.tensor(ev.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(ev.IMAGENET_STD).view(1, 3, 1, 1)
R = 8  # exported patch grid: 112² input, position embeddings interpolated from 4x4


def tiny(registers):
    torch.manual_seed(registers + 3)
    m = DinoVisionTransformer(patch_size=14, img_size=56, depth=2, embed_dim=32, num_heads=2, mlp_ratio=2,
                              num_register_tokens=registers, block_chunks=0, init_values=1.0,
                              interpolate_antialias=registers > 0, interpolate_offset=0.0 if registers else 0.1,
                              block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention)).eval()
    with torch.no_grad():  # not the trivial initial values
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def reference(model, image):
    """The module's own attention probabilities, keys (from its qkv) and final tokens."""
    keys = []
    hooks = [blk.attn.qkv.register_forward_hook(lambda mod, i, o: keys.append(o)) for blk in model.blocks]
    SEEN.clear()
    with torch.no_grad():
        out = model.forward_features((image - MEAN) / STD)
    for h in hooks:
        h.remove()
    probs = list(SEEN)
    ks = []
    for o in keys:
        b, t, c3 = o.shape
        ks.append(o.reshape(b, t, 3, 2, c3 // 6)[:, :, 1].reshape(t, c3 // 3))  # heads concatenated
    return probs, ks, out


class ExportViT(unittest.TestCase):
    def check(self, registers):
        model = tiny(registers)
        a = 1 + registers
        traced, meta, wrapper = ev.export(copy.deepcopy(model), "dinov2-hub", 14, registers, R, [0, -1], [0.0, 1.0],
                                          ["keys", "tokens", "cls", "cls_attention"], model_id="tiny")
        img = torch.rand(1, 3, R * 14, R * 14, generator=torch.Generator().manual_seed(5))
        probs, keys, out = reference(model, img)
        with torch.no_grad():
            got = traced(img)
            eager = wrapper(img)
        for name in got:  # trace == eager
            self.assertLess((got[name] - eager[name]).abs().max().item(), 1e-6, name)
        n = R * R
        for i in (0, 1):  # head mean, prefix dropped, rows renormalised
            p = probs[i].mean(1)[0, a:, a:]
            p = p / p.sum(-1, keepdim=True)
            self.assertEqual(tuple(got["layer.%d" % i].shape), (n, n))
            self.assertLess((got["layer.%d" % i] - p).abs().max().item(), 1e-6)
        self.assertLess((got["keys.1"] - keys[1][a:]).abs().max().item(), 1e-6)
        self.assertLess((got["tokens"] - out["x_norm_patchtokens"][0]).abs().max().item(), 1e-5)
        self.assertLess((got["cls"] - out["x_norm_clstoken"][0]).abs().max().item(), 1e-5)
        ca = probs[1].mean(1)[0, 0, a:]
        self.assertLess((got["cls_attention.1"] - ca / ca.sum()).abs().max().item(), 1e-6)
        graph = str(traced.inlined_graph)
        self.assertNotIn("scaled_dot_product", graph)
        m = json.loads(meta)
        self.assertEqual(m["format"], "m2n2-attention/2")
        self.assertEqual(m["prefix_tokens"], {"cls": 1, "registers": registers})
        self.assertEqual(m["grid"], [R, R])
        self.assertEqual([f["kind"] for f in m["features"]], ["keys", "patch_tokens", "cls", "cls_attention"])
        self.assertEqual(m["layers"][1], {"name": "layer.1", "grid": [R, R], "weight": 1.0})
        # m2n2 loads the archive and segments with it.
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "vit.pt")
            torch.jit.save(traced, path, _extra_files={"m2n2.json": meta})
            r = subprocess.run([M2N2, "segment", "--source", "torchscript:" + path, "--image",
                                os.path.join(ROOT, "examples", "images", "kite.png"), "--click", "250,110,+",
                                "--out", os.path.join(d, "m.png"), "--no-cache", "-q"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(os.path.getsize(os.path.join(d, "m.png")) > 0)

    def test_with_a_register(self):
        self.check(1)

    def test_without_registers(self):
        self.check(0)

    def test_fp16_needs_cuda(self):
        with tempfile.TemporaryDirectory() as d:
            code = ev.main(["--family", "dinov2-hub", "--model", "x", "--fp16", "--out", os.path.join(d, "x.pt")])
            self.assertEqual(code, 2)
            self.assertFalse(os.listdir(d))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=1)
