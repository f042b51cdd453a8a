"""Self-attention capture shared by scripts/export_sd_attention.py (Stable Diffusion)
and scripts/make_test_model.py (the tiny test fixture), so that both exercise the
same code path.

The probabilities are recomputed from each `attn1` module's own weights
(to_q, to_k, heads, scale) in a forward pre-hook, so the capture does not depend on
which attention processor diffusers runs (fused kernels never materialise them)
and uses only ops that LibTorch 1.13 can load (no scaled_dot_product_attention).
"""
import json

import torch


def attention_probs(module, hidden_states):
    """softmax(Q Kᵀ · scale) averaged over heads: (B, N, N), fp32."""
    q = module.to_q(hidden_states)
    k = module.to_k(hidden_states)
    b, n, c = q.shape
    h = module.heads
    d = c // h
    q = q.reshape(b, n, h, d).permute(0, 2, 1, 3)
    k = k.reshape(b, n, h, d).permute(0, 2, 1, 3)
    scale = float(module.scale)
    # Softmax in the model's dtype (fp16 on GPU, as the M2N2 reference does), then
    # the mean over heads in fp32.
    probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1)
    return probs.float().mean(dim=1)


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


def metadata(model_id, input_size, timestep, layers, grids, weights, dtype):
    return json.dumps({
        "format": "m2n2-attention/1",
        "model_id": model_id,
        "input_size": list(input_size),
        "input": "RGB float in [0, 1], NCHW",
        "timestep": timestep,
        "dtype": dtype,
        "layers": [{"name": n, "grid": list(g), "weight": w} for n, g, w in zip(layers, grids, weights)],
    })
