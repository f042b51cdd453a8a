#!/usr/bin/env python3
"""Exports Stable Diffusion self-attention to a TorchScript file that m2n2 loads
with `--source torchscript:FILE`. Run once, on a machine with PyTorch, diffusers and
a checkpoint (local folder or hub id); M2N2's setting is grid 128 (input 1024²):

    python3 scripts/export_sd_attention.py --model stabilityai/stable-diffusion-2 \\
        --device cuda --fp16 --out models/sd2-r128-fp16.pt
    python3 scripts/export_sd_attention.py --model stabilityai/stable-diffusion-2-1-base \\
        --device cpu --resolution 64 --out models/sd21base-r64.pt

What the file computes for an RGB image in [0, 1] resized to 8·R × 8·R (m2n2 does the
INTER_AREA resize): the VAE posterior mean × scaling factor (no noise), one UNet pass
at --timestep with the empty-prompt embedding baked in (no classifier-free guidance),
and the attn1 probabilities of the chosen layers averaged over heads, returned as
{layer name: (N, N)} in fp32. Defaults are M2N2's: up_blocks.3.attentions.{0,1},
0.5 each, timestep 100, R = 128. The metadata (m2n2.json inside the archive) names the
model, the traced size, timestep, dtype, layers, grids and weights.

The archive is device-neutral: the timestep projection is computed once at export
and every attention runs through m2n2.capture.scores_like_diffusers, so the graph
holds no device constant and LibTorch moves it to the CPU or a GPU on load. An fp32
archive runs on both; an --fp16 archive needs CUDA (LibTorch's CPU kernels have no
fp16 convolutions), and m2n2 says so when asked to run one on the CPU. The export
avoids ops newer than LibTorch 1.13 (no scaled_dot_product_attention is traced).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import m2n2_capture as capture  # noqa: E402  (python/m2n2/capture.py)
from m2n2_capture import M2N2_LAYERS, M2N2_WEIGHTS, device_constants, metadata  # noqa: E402,F401 (tests read the weights here)


def all_self_attention_layers(unet):
    names = []
    for name, _ in unet.named_modules():
        if name.endswith(".transformer_blocks.0.attn1"):
            names.append(name[: -len(".transformer_blocks.0.attn1")])
    return names


empty_prompt_embedding = capture.empty_prompt_embedding

# The traced module: what m2n2.capture.stable_diffusion runs eagerly.
Exported = capture.SDAttention


def choose_layers(unet, layers=None, weights=None, all_layers=False):
    if all_layers:
        layers = all_self_attention_layers(unet)
        weights = [0.5 if n in M2N2_LAYERS else 0.0 for n in layers]
        return layers, weights
    try:
        return capture.choose_layers(layers, weights)
    except ValueError:
        raise ValueError("--weights needs one value per layer")


def export(unet, vae, embedding, out, *, model_id, resolution=128, timestep=100, layers=None, weights=None,
           all_layers=False, fp16=False, device="cpu", log=print):
    """Everything after the pipeline is loaded: traces the attention of `unet`/`vae`
    for an 8·R × 8·R input and writes the archive `out`. Returns (layers, grids)."""
    from diffusers.models.attention_processor import AttnProcessor

    if fp16 and torch.device(device).type != "cuda":
        raise ValueError("--fp16 needs --device cuda (the CPU kernels have no fp16 convolutions)")
    dtype = torch.float16 if fp16 else torch.float32
    unet = unet.to(device=device, dtype=dtype).eval()
    vae = vae.to(device=device, dtype=dtype).eval()
    unet.set_attn_processor(AttnProcessor())
    if hasattr(vae, "set_attn_processor"):
        vae.set_attn_processor(AttnProcessor())
    layers, weights = choose_layers(unet, layers, weights, all_layers)
    with torch.no_grad():
        size = 8 * resolution
        model = Exported(vae, unet, embedding.to(device=device, dtype=dtype), timestep, layers, dtype).eval()
        example = torch.rand(1, 3, size, size, device=device)
        probe = model(example)
        grids = []
        for name in layers:
            n = probe[name].shape[-1]
            side = int(round(n ** 0.5))
            grids.append((side, side))
        del probe
        traced = torch.jit.trace(model, example, strict=False, check_trace=False)
    left = device_constants(traced)
    if left:
        raise RuntimeError("the trace is tied to a device (%d device constants, first: %s); "
                           "this diffusers version is not supported" % (len(left), left[0]))
    try:
        import diffusers
        version = diffusers.__version__
    except Exception:  # noqa: BLE001 - a stand-in pipeline in tests
        version = "unknown"
    meta = metadata(model_id, (size, size), timestep, layers, grids, weights, "fp16" if fp16 else "fp32",
                    traced_device=torch.device(device).type, device_neutral=True, diffusers=version)
    tmp = out + ".tmp"
    try:
        torch.jit.save(traced, tmp, _extra_files={"m2n2.json": meta})
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log("wrote " + out + " layers: " + ", ".join(f"{n} {g[0]}x{g[1]}" for n, g in zip(layers, grids)))
    return layers, grids


def load_pipeline(model, dtype):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(model, torch_dtype=dtype, safety_checker=None)


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="SD 1.x / 2.x / 2.1-base checkpoint: folder or hub id")
    ap.add_argument("--out", required=True)
    ap.add_argument("--resolution", type=int, default=128, help="attention grid R (input 8·R); M2N2 uses 128")
    ap.add_argument("--timestep", type=int, default=100)
    ap.add_argument("--layers", nargs="*", help="attention blocks to export (default: M2N2's two)")
    ap.add_argument("--weights", nargs="*", type=float, help="weight per layer for M2N2 (default 0.5, 0.5)")
    ap.add_argument("--all-layers", action="store_true", help="export all 16 self-attention layers (for DiffSeg)")
    ap.add_argument("--fp16", action="store_true", help="run the network in fp16 (needs --device cuda)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def main(argv=None, load=load_pipeline):
    """The command line; `load(model, dtype)` returns the pipeline (tests pass a stand-in)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.fp16 and torch.device(args.device).type != "cuda":
        ap.error("--fp16 needs --device cuda (the CPU kernels have no fp16 convolutions)")
    if args.resolution < 1 or args.resolution > 256:
        ap.error("--resolution must be in 1..256")

    dtype = torch.float16 if args.fp16 else torch.float32
    pipe = load(args.model, dtype)
    pipe.to(args.device)
    with torch.no_grad():
        embedding = empty_prompt_embedding(pipe, args.device)
    try:
        export(pipe.unet, pipe.vae, embedding, args.out, model_id=args.model, resolution=args.resolution,
               timestep=args.timestep, layers=args.layers, weights=args.weights, all_layers=args.all_layers,
               fp16=args.fp16, device=args.device)
    except (ValueError, KeyError) as e:
        ap.error(str(e).strip("'\""))


if __name__ == "__main__":
    main()
