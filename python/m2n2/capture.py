"""m2n2.capture: the attention M2N2 uses, computed in your own PyTorch (any version,
device or dtype), for `engine.open(rgb, attention=...)`:

    from m2n2 import capture
    maps = capture.stable_diffusion(pipe, rgb)       # a diffusers StableDiffusionPipeline
    session = engine.open(rgb, attention=maps)

The same code makes the TorchScript archives (scripts/export_sd_attention.py, which
traces `SDAttention`) and the hand-made test fixture (scripts/make_test_model.py), so
the maps captured here equal the archive's. Pure Python: needs torch (and diffusers
for Stable Diffusion), never the compiled m2n2 extension.

Two ways in, one average:

* `DiffusersCapture` (Stable Diffusion): replaces `get_attention_scores` of every
  diffusers `Attention` module of the UNet and the VAE with `scores_like_diffusers`,
  the same numerics as diffusers' own (`upcast_attention` computes the scores in
  fp32, the scale is applied inside the batched matmul as baddbmm's alpha, softmax
  in fp32 when `upcast_softmax`, probabilities in the model's dtype), minus the
  `torch.empty` buffer whose device a trace bakes in. The probabilities recorded are
  the ones the UNet itself uses (nothing is recomputed beside it), averaged over
  heads one head at a time in fp32 (no fp32 copy of all heads: at grid 128 that copy
  alone is 5-8 GiB).
* `AttentionCapture` (any module with to_q/to_k/heads/scale): a forward pre-hook
  that recomputes the probabilities from the module's own weights, also one head
  at a time.

Both use only ops that LibTorch 1.13 can load (no scaled_dot_product_attention).
"""
import json

import numpy as np
import torch
from torch import nn


def head_average(probs, heads):
    """(B*heads, N, M) probabilities in any dtype -> (B, N, M) fp32 mean over heads."""
    bh, n, m = probs.shape
    p = probs.reshape(bh // heads, heads, n, m)
    acc = p[:, 0].to(dtype=torch.float32, copy=True)  # a copy even in fp32: the UNet still reads probs
    for h in range(1, heads):
        acc.add_(p[:, h])
    return acc.div_(heads)


def attention_probs(module, hidden_states):
    """softmax(Q Kᵀ · scale) averaged over heads: (B, N, N), fp32 (for AttentionCapture).
    One head at a time, summed into one fp32 map, as head_average does: never all
    heads' N x N probabilities at once."""
    q = module.to_q(hidden_states)
    k = module.to_k(hidden_states)
    h = module.heads
    d = q.shape[-1] // h
    acc = None
    for i in range(h):
        qi = q[:, :, i * d:(i + 1) * d]
        ki = k[:, :, i * d:(i + 1) * d]
        p = torch.softmax(torch.matmul(qi, ki.transpose(-1, -2)) * float(module.scale), dim=-1).float()
        acc = p if acc is None else acc.add_(p)
    return acc.div_(h)


def score_input(query, attention_mask):
    """baddbmm's (input, beta) for the scores: the mask with beta = 1, as diffusers does,
    or, without a mask, a broadcast zero with beta = 1 (see scores_like_diffusers)."""
    if attention_mask is not None:
        return attention_mask, 1
    return query[:1, :1, :1] * 0, 1


def scores_like_diffusers(attn, query, key, attention_mask=None):
    """diffusers' Attention.get_attention_scores, device-neutral and deterministic.

    Without a mask diffusers passes `torch.empty(..., device=query.device)` as
    baddbmm's input with beta = 0. Two things go wrong with that in an export:
    - in a trace the device becomes a constant, so a CUDA-traced archive cannot run
      on a CPU-only LibTorch;
    - torch 1.13's CPU baddbmm, for small products (contraction x rows x cols < 400,
      e.g. a 2x2 mid block), computes beta * out + alpha * acc on its freshly
      allocated output, so beta = 0 still turns a NaN left in that memory into NaN:
      the intermittent all-NaN maps of tiny UNets (docs/export-nan.md).
    Here the input is a broadcast zero derived from the query (no device constant)
    with beta = 1: the output is first set to that zero, and 0 + alpha * acc equals
    diffusers' alpha * acc exactly.
    """
    dtype = query.dtype
    if attn.upcast_attention:
        query = query.float()
        key = key.float()
    base, beta = score_input(query, attention_mask)
    scores = torch.baddbmm(base, query, key.transpose(-1, -2), beta=beta, alpha=attn.scale)
    if attn.upcast_softmax:
        scores = scores.float()
    probs = scores.softmax(dim=-1)
    return probs.to(dtype)


def diffusers_attention_modules(model):
    from diffusers.models.attention_processor import Attention

    return [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)]


class DiffusersCapture:
    """Switches every diffusers Attention of `models` to the classic AttnProcessor with
    `scores_like_diffusers`, and records the head-averaged probabilities of the
    self-attention (attn1) of the named transformer blocks of `unet`."""

    def __init__(self, unet, layer_names, others=()):
        from diffusers.models.attention_processor import AttnProcessor

        self.layer_names = list(layer_names)
        self.maps = {}
        wanted = {name + ".transformer_blocks.0.attn1": name for name in self.layer_names}
        found = set()
        for model in (unet,) + tuple(others):
            for name, module in diffusers_attention_modules(model):
                module.set_processor(AttnProcessor())
                layer = wanted.get(name) if model is unet else None
                module.get_attention_scores = self._scores(module, layer)
                if layer is not None:
                    found.add(layer)
        missing = [n for n in self.layer_names if n not in found]
        if missing:
            raise KeyError("no self-attention layer named " + ", ".join(missing))

    def _scores(self, module, layer):
        def scores(query, key, attention_mask=None):
            probs = scores_like_diffusers(module, query, key, attention_mask)
            if layer is not None:
                self.maps[layer] = head_average(probs, module.heads)[0]
            return probs
        return scores


class AttentionCapture:
    """Registers pre-hooks on named attn1 modules and collects their probabilities."""

    def __init__(self, model, layer_names):
        self.layer_names = list(layer_names)
        self.maps = {}
        self.handles = []
        modules = dict(model.named_modules())
        for name in self.layer_names:
            module = modules.get(name + ".transformer_blocks.0.attn1", modules.get(name))
            if module is None:
                raise KeyError("no attention layer named " + name)
            self.handles.append(module.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, args):
            self.maps[name] = attention_probs(module, args[0])[0]
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def device_constants(traced):
    """Device constants left in a traced module's graph (empty = device-neutral)."""
    found = []

    def walk(block):
        for node in block.nodes():
            if node.kind() == "prim::Constant" and node.outputsSize() == 1 and \
                    str(node.output().type()) == "Device":
                found.append(str(node).strip())
            for b in node.blocks():
                walk(b)

    walk(traced.inlined_graph)
    return found


def metadata(model_id, input_size, timestep, layers, grids, weights, dtype, **extra):
    meta = {
        "format": "m2n2-attention/1",
        "model_id": model_id,
        "input_size": list(input_size),
        "input": "RGB float in [0, 1], NCHW",
        "timestep": timestep,
        "dtype": dtype,
        "layers": [{"name": n, "grid": list(g), "weight": w} for n, g, w in zip(layers, grids, weights)],
    }
    meta.update(extra)
    return json.dumps(meta)


# ------------------------------------------------------------------ Stable Diffusion

M2N2_LAYERS = ["up_blocks.3.attentions.0", "up_blocks.3.attentions.1"]
M2N2_WEIGHTS = [0.5, 0.5]


class FixedTimestepProjection(nn.Module):
    """Stands in for unet.time_proj: the sinusoidal projection of the one timestep,
    computed once. diffusers builds it with torch.arange(device=...), a device
    constant in a trace."""

    def __init__(self, value):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, timesteps):
        return self.value.expand(timesteps.shape[0], -1)


class SDAttention(nn.Module):
    """image (1,3,8R,8R) RGB in [0,1] -> {layer: (N,N) head-mean self-attention}: the VAE
    posterior mean x scaling factor (no noise), one UNet pass at `timestep` with the
    prompt embedding `embedding`, the attn1 probabilities of `layers`. What the export
    traces; capture for eager use. Switches the modules' attention processors to the
    classic one (same numerics) and their timestep projection to a fixed one."""

    def __init__(self, vae, unet, embedding, timestep, layers, dtype):
        super().__init__()
        self.vae = vae
        self.unet = unet
        self.register_buffer("embedding", embedding)
        # A 1-d timestep: diffusers moves only 0-d timesteps to the sample's device,
        # so it must live on the module's device (a buffer moves with the module).
        t = torch.tensor([timestep], dtype=torch.long, device=embedding.device)
        self.register_buffer("timestep", t)
        with torch.no_grad():
            unet.time_proj = FixedTimestepProjection(unet.time_proj(t).detach())
        self.layers = layers
        self.dtype_ = dtype
        self.capture = DiffusersCapture(unet, layers, others=(vae,))

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


def empty_prompt_embedding(pipe, device):
    """The pipeline's embedding of the empty prompt (1, 77, C), on `device`."""
    if hasattr(pipe, "encode_prompt"):
        out = pipe.encode_prompt("", device, 1, False)
        return out[0] if isinstance(out, (tuple, list)) else out
    return pipe._encode_prompt("", device, 1, False)  # older diffusers


def choose_layers(layers=None, weights=None):
    """(layers, weights): M2N2's two layers at 0.5 each, or the given layers at equal
    weights unless weights are given."""
    layers = list(layers or M2N2_LAYERS)
    weights = list(weights or (M2N2_WEIGHTS if layers == M2N2_LAYERS else [1.0 / len(layers)] * len(layers)))
    if len(weights) != len(layers):
        raise ValueError("weights: one value per layer is needed")
    return layers, weights


def image_tensor(rgb, size, device=None):
    """An H x W x 3 uint8 RGB array as m2n2 feeds a network: resized to `size` (h, w) with
    OpenCV's INTER_AREA, (1,3,h,w) float32 in [0,1] on `device`."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError("image: expected an HxWx3 uint8 RGB array, got %s %s" % (a.dtype, tuple(a.shape)))
    h, w = size
    if a.shape[:2] != (h, w):
        import cv2

        a = cv2.resize(np.ascontiguousarray(a), (w, h), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].to(torch.float32).div(255.0)
    return x.contiguous().to(device) if device is not None else x.contiguous()


def _as_maps(out, layers, weights):
    return {name: {"attention": out[name].detach().to(device="cpu", dtype=torch.float32).numpy(), "weight": float(w)}
            for name, w in zip(layers, weights)}


def stable_diffusion(pipe, rgb, resolution=128, timestep=100, layers=None, weights=None, *, unet=None, vae=None,
                     embedding=None):
    """M2N2's attention of a Stable Diffusion 1.x / 2.x pipeline for one image:
    {layer: {"attention": (N,N) float32 array, "weight": w}}, N = R², for
    `engine.open(rgb, attention=...)`. The image is resized to 8R x 8R; the network
    runs on the device and in the dtype of `pipe.unet` with the empty prompt (no
    classifier-free guidance). Instead of a pipeline: unet=, vae= and the prompt
    embedding= (pipe=None). The modules keep the classic attention processor and a
    fixed timestep projection afterwards (the numerics are diffusers' own)."""
    unet = unet if unet is not None else pipe.unet
    vae = vae if vae is not None else pipe.vae
    param = next(unet.parameters())
    with torch.no_grad():
        if embedding is None:
            embedding = empty_prompt_embedding(pipe, param.device)
        layers, weights = choose_layers(layers, weights)
        model = SDAttention(vae, unet, embedding.to(device=param.device, dtype=param.dtype), timestep, layers,
                            param.dtype).eval()
        out = model(image_tensor(rgb, (8 * resolution, 8 * resolution), param.device))
    return _as_maps(out, layers, weights)
