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
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import m2n2_capture as capture  # noqa: E402  (python/m2n2/capture.py)

# The capture code lives in m2n2.capture (python/m2n2/capture.py): `ViTAttention` is
# what is traced here and what capture.vit runs eagerly.
Exported = capture.ViTAttention
IMAGENET_MEAN, IMAGENET_STD, KINDS = capture.IMAGENET_MEAN, capture.IMAGENET_STD, capture.VIT_FEATURES
attention_modules, explicit_forward = capture.vit_attention_modules, capture.explicit_forward


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
