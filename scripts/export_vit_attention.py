#!/usr/bin/env python3
"""Exports a self-supervised ViT once, for m2n2, as TorchScript in the format
m2n2-attention/2: per chosen layer the head-mean self-attention over the patches (CLS
and register rows and columns dropped, rows renormalised, as M2N2's DINOv2 aggregator
does), plus named features for LightCluster: the keys of a layer, the final patch
tokens, the final CLS token and the CLS attention of a layer.

    # DINOv2 from its torch.hub code (a local clone) and a downloaded checkpoint
    python3 scripts/export_vit_attention.py --family dinov2-hub --repo ~/dinov2 --model dinov2_vitb14_reg \\
        --weights dinov2_vitb14_reg4_pretrain.pth --out dinov2-b14reg.pt
    # DINOv2 from Hugging Face transformers (M2N2's reference model)
    python3 scripts/export_vit_attention.py --family dinov2-hf --model facebook/dinov2-base --out dinov2-base.pt
    # DINO v1 from its torch.hub code
    python3 scripts/export_vit_attention.py --family dino --repo ~/dino --model dino_vits8 \\
        --weights dino_deitsmall8_pretrain.pth --resolution 60 --out dino-s8.pt

Defaults are M2N2's DINOv2 aggregator: --resolution 80 (input 80 x patch size, 1120 for
patch 14), the last layer with weight 1; features keys and cls of the last layer.
Attention is computed explicitly (softmax(q kᵀ · scale)): LibTorch 1.13 has no
scaled_dot_product_attention. ImageNet normalisation happens inside the archive; the
input is RGB in [0, 1]. Runs on Debian's torch 1.13 (CPU) or any newer torch.
"""
import argparse
import json
import os
import sys
import types
import warnings

import torch
from torch import nn

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
KINDS = {"keys", "tokens", "cls", "cls_attention"}


def attention_modules(model, family):
    """The self-attention modules in block order, with their head count and scale."""
    found = []
    for name, m in model.named_modules():
        if family == "dinov2-hf":
            if hasattr(m, "query") and hasattr(m, "key") and hasattr(m, "value") and hasattr(m, "num_attention_heads"):
                found.append((name, m))
        elif hasattr(m, "qkv") and hasattr(m, "num_heads") and hasattr(m, "proj"):
            found.append((name, m))
    return found


def explicit_forward(module, family, record, index):
    """A forward with the module's own weights and explicit attention; records (p, k)."""

    if family == "dinov2-hf":
        def forward(self, hidden_states, head_mask=None, output_attentions=False, *args, **kwargs):
            b, t, c = hidden_states.shape
            h, d = self.num_attention_heads, self.attention_head_size

            def heads(x):
                return x.view(b, t, h, d).permute(0, 2, 1, 3)

            q, k, v = heads(self.query(hidden_states)), heads(self.key(hidden_states)), heads(self.value(hidden_states))
            p = torch.softmax((q @ k.transpose(-1, -2)) * (d ** -0.5), dim=-1)
            record[index] = (p, k)
            y = (p @ v).permute(0, 2, 1, 3).reshape(b, t, h * d)
            return (y, p) if output_attentions else (y,)
    else:
        returns_attention = family == "dino"  # DINO v1's Attention.forward returns (x, attn)

        def forward(self, x, *args, **kwargs):
            b, t, c = x.shape
            h = self.num_heads
            qkv = self.qkv(x).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            p = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)
            record[index] = (p, k)
            y = self.proj((p @ v).transpose(1, 2).reshape(b, t, c))
            if hasattr(self, "proj_drop"):
                y = self.proj_drop(y)
            return (y, p) if returns_attention else y
    module.forward = types.MethodType(forward, module)


class Exported(nn.Module):
    """image (1,3,S,S) RGB in [0,1] -> {name: tensor} of format m2n2-attention/2."""

    def __init__(self, model, family, layers, weights, key_layer, attn_layer, features, registers):
        super().__init__()
        self.model, self.family = model, family
        self.layers, self.weights = layers, weights
        self.key_layer, self.attn_layer, self.features = key_layer, attn_layer, features
        self.prefix = 1 + registers
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.record = {}
        self.attn = attention_modules(model, family)
        for i, (_, m) in enumerate(self.attn):
            explicit_forward(m, family, self.record, i)

    def final_tokens(self, x):
        m = self.model
        if self.family == "dinov2-hf":
            return m(pixel_values=x).last_hidden_state  # after the final layernorm
        if self.family == "dinov2-hub":
            t = m.prepare_tokens_with_masks(x)
        else:
            t = m.prepare_tokens(x)
        for blk in m.blocks:
            t = blk(t)
        return m.norm(t)

    def forward(self, image):
        self.record.clear()
        x = (image - self.mean) / self.std
        y = self.final_tokens(x.to(next(self.model.parameters()).dtype))[0]
        a = self.prefix
        out = {}
        for i in self.layers:
            p = self.record[i][0].float().mean(1)[0, a:, a:]
            out["layer.%d" % i] = p / p.sum(-1, keepdim=True)
        if "keys" in self.features:
            k = self.record[self.key_layer][1][0]  # (heads, tokens, head dim)
            out["keys.%d" % self.key_layer] = k.transpose(0, 1).reshape(k.shape[1], -1)[a:].float()
        if "cls_attention" in self.features:
            ca = self.record[self.attn_layer][0].float().mean(1)[0, 0, a:]
            out["cls_attention.%d" % self.attn_layer] = ca / ca.sum()
        if "tokens" in self.features:
            out["tokens"] = y[a:].float()
        if "cls" in self.features:
            out["cls"] = y[0].float()
        return out


def load_model(args):
    """The ViT of a family (weights from --weights where the family needs a file)."""
    if args.family == "dinov2-hf":
        from transformers import AutoModel  # not on Debian: pip install transformers
        model = AutoModel.from_pretrained(args.model, attn_implementation="eager")
        registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
        return model.eval(), model.config.patch_size, registers
    if not args.repo:
        raise SystemExit("--family %s needs --repo (a clone of its torch.hub repository)" % args.family)
    sys.path.insert(0, args.repo)
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    model = torch.hub.load(args.repo, args.model, source="local", pretrained=False)
    if args.weights:
        state = torch.load(args.weights, map_location="cpu")
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state, strict=False)
    patch = model.patch_embed.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    return model.eval(), patch, int(getattr(model, "num_register_tokens", 0) or 0)


def export(model, family, patch, registers, resolution, layers, weights, features, key_layer=None, attn_layer=None,
           model_id="vit", dtype="fp32", device="cpu"):
    """Traces the wrapper; returns (traced module, metadata JSON string, eager wrapper)."""
    n_layers = len(attention_modules(model, family))
    layers = [n_layers + i if i < 0 else i for i in layers]
    key_layer = layers[-1] if key_layer is None else key_layer
    attn_layer = layers[-1] if attn_layer is None else attn_layer
    unknown = set(features) - KINDS
    if unknown:
        raise SystemExit("--features: unknown %s (keys, tokens, cls, cls_attention)" % ",".join(sorted(unknown)))
    size = resolution * patch
    wrapper = Exported(model, family, layers, weights, key_layer, attn_layer, features, registers).to(device).eval()
    example = torch.rand(1, 3, size, size, device=device)
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks of the model code become constants at the traced size: intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, example, strict=False, check_trace=False)
        out = wrapper(example)
    n = resolution * resolution
    dim = out["tokens"].shape[-1] if "tokens" in out else out["cls"].shape[-1] if "cls" in out else None
    feats = []
    if "keys" in features:
        feats.append({"name": "keys.%d" % key_layer, "kind": "keys", "layer": key_layer,
                      "shape": list(out["keys.%d" % key_layer].shape)})
    if "tokens" in features:
        feats.append({"name": "tokens", "kind": "patch_tokens", "norm": "final", "shape": [n, dim]})
    if "cls" in features:
        feats.append({"name": "cls", "kind": "cls", "norm": "final", "shape": [dim]})
    if "cls_attention" in features:
        feats.append({"name": "cls_attention.%d" % attn_layer, "kind": "cls_attention", "layer": attn_layer, "shape": [n]})
    meta = {
        "format": "m2n2-attention/2", "family": "vit", "exporter_family": family, "model_id": model_id,
        "input_size": [size, size], "input": "RGB float in [0, 1], NCHW",
        "normalize": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "applied": "inside"},
        "patch_size": patch, "grid": [resolution, resolution],
        "prefix_tokens": {"cls": 1, "registers": registers}, "timestep": None, "dtype": dtype,
        "traced_device": device, "torch": torch.__version__,
        "layers": [{"name": "layer.%d" % i, "grid": [resolution, resolution], "weight": w} for i, w in zip(layers, weights)],
        "features": feats,
    }
    return traced, json.dumps(meta), wrapper


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True, choices=["dinov2-hub", "dinov2-hf", "dino"])
    ap.add_argument("--model", required=True, help="hub entry point (dinov2_vitb14_reg, dino_vits8) or HF id")
    ap.add_argument("--repo", help="local clone of the torch.hub repository (dinov2-hub, dino)")
    ap.add_argument("--weights", help="checkpoint file (dinov2-hub, dino)")
    ap.add_argument("--resolution", type=int, default=80, help="patch grid side (input = resolution x patch)")
    ap.add_argument("--layers", default="-1", help="comma-separated block indices (negative from the end)")
    ap.add_argument("--weights-per-layer", default=None, help="comma-separated; default 1 for the last, 0 for the rest")
    ap.add_argument("--features", default="keys,cls", help="any of keys,tokens,cls,cls_attention ('' = none)")
    ap.add_argument("--fp16", action="store_true", help="run the network in fp16 (CUDA only)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.fp16 and not args.device.startswith("cuda"):
        print("export_vit_attention: --fp16 needs --device cuda (LibTorch's CPU kernels lack fp16)", file=sys.stderr)
        return 2
    model, patch, registers = load_model(args)
    if args.fp16:
        model = model.half()
    layers = [int(s) for s in args.layers.split(",")]
    weights = ([float(s) for s in args.weights_per_layer.split(",")] if args.weights_per_layer
               else [1.0 if i == len(layers) - 1 else 0.0 for i in range(len(layers))])
    features = [f for f in args.features.split(",") if f]
    traced, meta, _ = export(model.to(args.device), args.family, patch, registers, args.resolution, layers, weights,
                             features, model_id=args.model, dtype="fp16" if args.fp16 else "fp32", device=args.device)
    tmp = args.out + ".tmp"
    torch.jit.save(traced, tmp, _extra_files={"m2n2.json": meta})
    os.replace(tmp, args.out)
    print("wrote %s: %s" % (args.out, meta), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
