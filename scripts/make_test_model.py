#!/usr/bin/env python3
"""Builds models/tiny-test-attention.pt: a tiny network with the same inputs,
outputs, metadata and attention-capture code path as a Stable Diffusion export,
for m2n2's tests. Runs with Debian's python3-torch (no diffusers, no weights):

    /usr/bin/python3 scripts/make_test_model.py --out models/tiny-test-attention.pt
"""
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models", "tiny-test-attention.pt"))
    args = ap.parse_args()
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
