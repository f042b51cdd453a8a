#!/usr/bin/env python3
"""Builds models/tiny-test-attention.pt: a tiny network with the same inputs,
outputs, metadata and attention-capture code path as a Stable Diffusion export,
for m2n2's tests. Runs with Debian's python3-torch (no diffusers, no weights):

    /usr/bin/python3 scripts/make_test_model.py --out models/tiny-test-attention.pt

With --vit, models/tiny-vit-features.pt instead: a 2-block ViT (patch 14, C = 32,
2 heads, CLS + 1 register, ImageNet normalisation inside) exported in the
m2n2-attention/2 format with every feature kind (keys, patch_tokens, cls,
cls_attention), so that the features path is tested without weights:

    /usr/bin/python3 scripts/make_test_model.py --vit --out models/tiny-vit-features.pt
"""
import json
import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from m2n2_capture import AttentionCapture, metadata  # noqa: E402

INPUT = 64          # traced input size
LAYERS = ["up_blocks.3.attentions.0", "up_blocks.3.attentions.1", "down_blocks.1.attentions.0"]
GRIDS = [(8, 8), (8, 8), (4, 4)]
WEIGHTS = [0.5, 0.5, 0.0]


class TinyAttention(nn.Module):
    """Same attribute names as diffusers' Attention (to_q, to_k, to_v, to_out, heads, scale)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x):
        b, n, c = x.shape
        h = self.heads
        q = self.to_q(x).reshape(b, n, h, -1).transpose(1, 2)
        k = self.to_k(x).reshape(b, n, h, -1).transpose(1, 2)
        v = self.to_v(x).reshape(b, n, h, -1).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        return self.to_out[0]((p @ v).transpose(1, 2).reshape(b, n, c))


class TinyTransformer(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.transformer_blocks = nn.ModuleList([nn.Module()])
        self.transformer_blocks[0].attn1 = TinyAttention(dim, heads)

    def forward(self, x):
        b, c, hh, ww = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.transformer_blocks[0].attn1(t)
        return t.transpose(1, 2).reshape(b, c, hh, ww)


class TinyUNet(nn.Module):
    """Encoder to an 8×8 'latent', one block at 4×4, two at 8×8 (names as in SD)."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.GELU(),
                                    nn.Conv2d(dim, dim, 3, stride=2, padding=1), nn.GELU(),
                                    nn.Conv2d(dim, dim, 3, stride=2, padding=1))
        self.down_blocks = nn.ModuleList([nn.Module(), nn.Module()])
        self.down_blocks[1].attentions = nn.ModuleList([TinyTransformer(dim, heads)])
        self.up_blocks = nn.ModuleList([nn.Module() for _ in range(4)])
        self.up_blocks[3].attentions = nn.ModuleList([TinyTransformer(dim, heads), TinyTransformer(dim, heads)])

    def forward(self, image):
        x = self.encode(image * 2.0 - 1.0)
        low = self.down_blocks[1].attentions[0](nn.functional.avg_pool2d(x, 2))
        x = x + nn.functional.interpolate(low, scale_factor=2.0, mode="nearest")
        x = self.up_blocks[3].attentions[0](x)
        x = self.up_blocks[3].attentions[1](x)
        return x


class Exported(nn.Module):
    """image (1,3,S,S) in [0,1] -> {layer name: (N, N) attention}."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.capture = AttentionCapture(net, LAYERS)

    def forward(self, image):
        self.capture.maps.clear()
        self.net(image)
        return {name: self.capture.maps[name] for name in LAYERS}


# ---------------------------------------------------------------- tiny ViT (format /2)
VIT_INPUT, VIT_PATCH, VIT_DIM, VIT_HEADS, VIT_BLOCKS, VIT_REGISTERS = 112, 14, 32, 2, 2, 1
VIT_GRID = VIT_INPUT // VIT_PATCH  # 8x8 patches
VIT_PREFIX = 1 + VIT_REGISTERS      # CLS, then the registers (DINOv2 *_reg order)


class TinyBlock(nn.Module):
    """A pre-norm ViT block with DINO's names: norm1, attn.qkv, attn.proj, norm2, mlp."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        b, t, c = x.shape
        h = self.heads
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, h, t, c/h)
        p = torch.softmax(q @ k.transpose(-1, -2) * (c // h) ** -0.5, dim=-1)
        x = x + self.attn.proj((p @ v).transpose(1, 2).reshape(b, t, c))
        x = x + self.mlp(self.norm2(x))
        return x, p, k


class TinyViT(nn.Module):
    """image (1,3,S,S) in [0,1] -> the /2 outputs: per block the head-mean patch attention
    (prefix rows and columns dropped, rows renormalised), the last block's keys and
    CLS attention, the final-norm patch tokens and CLS."""

    def __init__(self):
        super().__init__()
        d = VIT_DIM
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.patch_embed = nn.Conv2d(3, d, VIT_PATCH, stride=VIT_PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.5)
        self.register_tokens = nn.Parameter(torch.randn(1, VIT_REGISTERS, d) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + VIT_GRID * VIT_GRID, d) * 0.2)
        self.blocks = nn.ModuleList([TinyBlock(d, VIT_HEADS) for _ in range(VIT_BLOCKS)])
        self.norm = nn.LayerNorm(d)

    def forward(self, image):
        x = self.patch_embed((image - self.mean) / self.std).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token, x], dim=1) + self.pos_embed
        x = torch.cat([x[:, :1], self.register_tokens, x[:, 1:]], dim=1)  # registers after the position embedding
        out = {}
        p = k = x
        for i, blk in enumerate(self.blocks):
            x, p, k = blk(x)
            a = p.mean(1)[0, VIT_PREFIX:, VIT_PREFIX:]
            out["blocks.%d" % i] = a / a.sum(-1, keepdim=True)
        last = VIT_BLOCKS - 1
        out["keys.%d" % last] = k[0].transpose(0, 1).reshape(-1, VIT_DIM)[VIT_PREFIX:]
        ca = p.mean(1)[0, 0, VIT_PREFIX:]
        out["cls_attention.%d" % last] = ca / ca.sum()
        y = self.norm(x)[0]
        out["tokens"] = y[VIT_PREFIX:]
        out["cls"] = y[0]
        return out


def vit_metadata():
    n, last = VIT_GRID * VIT_GRID, VIT_BLOCKS - 1
    return json.dumps({
        "format": "m2n2-attention/2", "family": "vit", "model_id": "m2n2/tiny-vit-features",
        "input_size": [VIT_INPUT, VIT_INPUT], "input": "RGB float in [0, 1], NCHW",
        "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "applied": "inside"},
        "patch_size": VIT_PATCH, "grid": [VIT_GRID, VIT_GRID],
        "prefix_tokens": {"cls": 1, "registers": VIT_REGISTERS}, "timestep": None, "dtype": "fp32",
        "layers": [{"name": "blocks.%d" % i, "grid": [VIT_GRID, VIT_GRID], "weight": 1.0 if i == last else 0.0}
                   for i in range(VIT_BLOCKS)],
        "features": [{"name": "keys.%d" % last, "kind": "keys", "layer": last, "shape": [n, VIT_DIM]},
                     {"name": "tokens", "kind": "patch_tokens", "norm": "final", "shape": [n, VIT_DIM]},
                     {"name": "cls", "kind": "cls", "norm": "final", "shape": [VIT_DIM]},
                     {"name": "cls_attention.%d" % last, "kind": "cls_attention", "layer": last, "shape": [n]}],
    })


def build_vit(out_path):
    torch.manual_seed(0)
    model = TinyViT().eval()
    example = torch.rand(1, 3, VIT_INPUT, VIT_INPUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        traced = torch.jit.trace(model, example, strict=False)
        other = torch.rand(1, 3, VIT_INPUT, VIT_INPUT, generator=torch.Generator().manual_seed(2))
        eager, replay = model(other), traced(other)
    for name in eager:
        assert torch.allclose(eager[name], replay[name], atol=1e-6), name  # trace == eager on another image
    tmp = out_path + ".tmp"
    torch.jit.save(traced, tmp, _extra_files={"m2n2.json": vit_metadata()})
    os.replace(tmp, out_path)
    for name, t in replay.items():
        print(name, tuple(t.shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--vit", action="store_true", help="the tiny ViT of format m2n2-attention/2 instead")
    args = ap.parse_args()
    models = os.path.join(os.path.dirname(__file__), "..", "models")
    if args.vit:
        return build_vit(args.out or os.path.join(models, "tiny-vit-features.pt"))
    args.out = args.out or os.path.join(models, "tiny-test-attention.pt")
    torch.manual_seed(0)
    net = TinyUNet().eval()
    model = Exported(net).eval()
    example = torch.rand(1, 3, INPUT, INPUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        traced = torch.jit.trace(model, example, strict=False, check_trace=False)
    meta = metadata("m2n2/tiny-test-attention", (INPUT, INPUT), 100, LAYERS, GRIDS, WEIGHTS, "fp32")
    tmp = args.out + ".tmp"
    torch.jit.save(traced, tmp, _extra_files={"m2n2.json": meta})
    os.replace(tmp, args.out)
    out = traced(example)
    for name in LAYERS:
        print(name, tuple(out[name].shape), float(out[name].sum(-1).min()), float(out[name].sum(-1).max()))


if __name__ == "__main__":
    main()
