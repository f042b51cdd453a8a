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
import types

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


# ------------------------------------------------------------------ ViTs (DINOv2, DINO)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
VIT_FEATURES = {"keys", "tokens", "cls", "cls_attention"}


def vit_attention_modules(model, family):
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


class ViTAttention(nn.Module):
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
        self.attn = vit_attention_modules(model, family)
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


def vit(model, rgb, family="dinov2-hub", resolution=None, layers=(-1,), weights=None, registers=None, patch=None):
    """Self-attention of a DINOv2 / DINO ViT for one image, as scripts/export_vit_attention.py
    exports it: {"layer.I": {"attention": (N,N) float32 array, "weight": w}}, N = R²
    patches (prefix tokens dropped, rows renormalised), the image resized to R·patch
    square and normalised with ImageNet's mean and std. `family`: dinov2-hub (torch.hub
    DinoVisionTransformer), dinov2-hf (transformers) or dino. Default weights: 1 for
    the last layer listed, 0 for the others. The model's attention modules get an
    explicit forward (the same numerics, softmax(q kᵀ · scale))."""
    if patch is None:
        p = model.config.patch_size if family == "dinov2-hf" else model.patch_embed.patch_size
        patch = p[0] if isinstance(p, (tuple, list)) else p
    if registers is None:
        src = model.config if family == "dinov2-hf" else model
        registers = int(getattr(src, "num_register_tokens", 0) or 0)
    n_layers = len(vit_attention_modules(model, family))
    layers = [n_layers + i if i < 0 else i for i in layers]
    weights = list(weights) if weights is not None else [1.0 if i == len(layers) - 1 else 0.0 for i in range(len(layers))]
    if len(weights) != len(layers):
        raise ValueError("weights: one value per layer is needed")
    if resolution is None:
        resolution = 80
    param = next(model.parameters())
    wrapper = ViTAttention(model, family, layers, weights, layers[-1], layers[-1], [], registers).to(param.device).eval()
    size = resolution * patch
    with torch.no_grad():
        out = wrapper(image_tensor(rgb, (size, size), param.device))
    return _as_maps(out, ["layer.%d" % i for i in layers], weights)
