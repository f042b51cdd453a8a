"""Self-attention capture shared by scripts/export_sd_attention.py (Stable Diffusion)
and scripts/make_test_model.py (the hand-made test fixture).

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

import torch


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
