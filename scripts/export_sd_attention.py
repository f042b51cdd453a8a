#!/usr/bin/env python3
"""Exports Stable Diffusion self-attention to a TorchScript file that m2n2 loads
with `--source torchscript:FILE`. Run once, on a machine with PyTorch, diffusers and
a checkpoint (local folder or hub id):

    python3 scripts/export_sd_attention.py --model stabilityai/stable-diffusion-2-1-base \\
        --resolution 64 --out models/sd21base-r64.pt
    python3 scripts/export_sd_attention.py --model /data/sd2 --resolution 128 --fp16 --device cuda \\
        --out models/sd2-r128-fp16.pt

What the file computes for an RGB image in [0, 1] resized to 8·R × 8·R (m2n2 does the
INTER_AREA resize): the VAE posterior mean × scaling factor (no noise), one UNet pass
at --timestep with the empty-prompt embedding baked in (no classifier-free guidance),
and softmax(QKᵀ·scale) of the chosen attn1 layers averaged over heads, returned as
{layer name: (N, N)}. Defaults are M2N2's: up_blocks.3.attentions.{0,1}, 0.5 each,
timestep 100. The metadata (m2n2.json inside the archive) names the model, the traced
size, timestep, layers, grids and weights.

The export avoids ops newer than LibTorch 1.13 (it switches every attention module to
the classic AttnProcessor, so no scaled_dot_product_attention is traced) so that
Debian's LibTorch can load it.
"""
import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from m2n2_capture import AttentionCapture, metadata  # noqa: E402

M2N2_LAYERS = ["up_blocks.3.attentions.0", "up_blocks.3.attentions.1"]
M2N2_WEIGHTS = [0.5, 0.5]


def all_self_attention_layers(unet):
    names = []
    for name, _ in unet.named_modules():
        if name.endswith(".transformer_blocks.0.attn1"):
            names.append(name[: -len(".transformer_blocks.0.attn1")])
    return names


def empty_prompt_embedding(pipe, device):
    if hasattr(pipe, "encode_prompt"):
        out = pipe.encode_prompt("", device, 1, False)
        return out[0] if isinstance(out, (tuple, list)) else out
    return pipe._encode_prompt("", device, 1, False)  # older diffusers


class Exported(nn.Module):
    def __init__(self, vae, unet, embedding, timestep, layers, dtype):
        super().__init__()
        self.vae = vae
        self.unet = unet
        self.register_buffer("embedding", embedding)
        self.register_buffer("timestep", torch.tensor([timestep], dtype=torch.long))
        self.layers = layers
        self.dtype_ = dtype
        self.capture = AttentionCapture(unet, layers)

    def forward(self, image):
        x = image.to(self.dtype_) * 2.0 - 1.0
        h = self.vae.encoder(x)
        if getattr(self.vae, "quant_conv", None) is not None:
            h = self.vae.quant_conv(h)
        mean = h[:, : h.shape[1] // 2]  # posterior mean (mode); no sampling
        latent = mean * self.vae.config.scaling_factor
        self.capture.maps.clear()
        self.unet(latent, self.timestep, encoder_hidden_states=self.embedding, return_dict=False)
        return {name: self.capture.maps[name] for name in self.layers}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="SD 1.x / 2.x / 2.1-base checkpoint: folder or hub id")
    ap.add_argument("--out", required=True)
    ap.add_argument("--resolution", type=int, default=64, help="attention grid R (input 8·R); M2N2 uses 128")
    ap.add_argument("--timestep", type=int, default=100)
    ap.add_argument("--layers", nargs="*", help="attention blocks to export (default: M2N2's two)")
    ap.add_argument("--weights", nargs="*", type=float, help="weight per layer for M2N2 (default 0.5, 0.5)")
    ap.add_argument("--all-layers", action="store_true", help="export all 16 self-attention layers (for DiffSeg)")
    ap.add_argument("--fp16", action="store_true", help="run the network in fp16 (CUDA)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor

    dtype = torch.float16 if args.fp16 else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype, safety_checker=None)
    pipe.to(args.device)
    unet, vae = pipe.unet.eval(), pipe.vae.eval()
    unet.set_attn_processor(AttnProcessor())
    if hasattr(vae, "set_attn_processor"):
        vae.set_attn_processor(AttnProcessor())

    if args.all_layers:
        layers = all_self_attention_layers(unet)
        weights = [0.5 if n in M2N2_LAYERS else 0.0 for n in layers]
    else:
        layers = args.layers or M2N2_LAYERS
        weights = args.weights or (M2N2_WEIGHTS if layers == M2N2_LAYERS else [1.0 / len(layers)] * len(layers))
    if len(weights) != len(layers):
        sys.exit("--weights needs one value per layer")

    with torch.no_grad():
        embedding = empty_prompt_embedding(pipe, args.device).to(dtype)
        size = 8 * args.resolution
        model = Exported(vae, unet, embedding, args.timestep, layers, dtype).eval()
        example = torch.rand(1, 3, size, size, device=args.device)
        probe = model(example)
        grids = []
        for name in layers:
            n = probe[name].shape[-1]
            side = int(round(n ** 0.5))
            grids.append((side, side))
        traced = torch.jit.trace(model, example, strict=False, check_trace=False)
    meta = metadata(args.model, (size, size), args.timestep, layers, grids, weights, "fp16" if args.fp16 else "fp32")
    tmp = args.out + ".tmp"
    torch.jit.save(traced, tmp, _extra_files={"m2n2.json": meta})
    os.replace(tmp, args.out)
    print("wrote", args.out, "layers:", ", ".join(f"{n} {g[0]}x{g[1]}" for n, g in zip(layers, grids)))


if __name__ == "__main__":
    main()
