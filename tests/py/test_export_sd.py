#!/usr/bin/env python3
"""scripts/export_sd_attention.py against the real diffusers code (the pinned sources
in ../shared/vendor), with tiny random-weight SD 1.x, SD 2.x and SD 2.x-with-upcast
UNet + VAE configurations (tests/py/tiny_sd.py).

    /usr/bin/python3 tests/py/test_export_sd.py M2N2_BINARY SOURCE_DIR SHARED_DIR

Exits 77 (ctest: skipped) with one line when SHARED_DIR/vendor is absent.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import unittest
import zipfile

M2N2, ROOT, SHARED = (sys.argv[1:4] + [None] * 3)[:3]
VENDOR = os.path.join(SHARED or "", "vendor")
PATHS = [os.path.join(VENDOR, "diffusers-0.31.0", "src"), os.path.join(VENDOR, "huggingface_hub-0.36.2", "src")]
if not all(os.path.isdir(p) for p in PATHS):
    print("skipped: needs the pinned diffusers in " + VENDOR + " (not beside this clone)")
    sys.exit(77)
sys.path[:0] = PATHS + [os.path.join(ROOT, "tests", "py_stubs"), os.path.join(ROOT, "tests", "py"),
                        os.path.join(ROOT, "scripts")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import export_sd_attention as export_sd  # noqa: E402
import tiny_sd  # noqa: E402
from m2n2_capture import device_constants, score_input, scores_like_diffusers  # noqa: E402

R = 16  # attention grid of up_blocks.3 (input 128 x 128)
SD_LAYERS = ["down_blocks.0.attentions.0", "down_blocks.0.attentions.1", "down_blocks.1.attentions.0",
             "down_blocks.1.attentions.1", "down_blocks.2.attentions.0", "down_blocks.2.attentions.1",
             "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
             "up_blocks.2.attentions.0", "up_blocks.2.attentions.1", "up_blocks.2.attentions.2",
             "up_blocks.3.attentions.0", "up_blocks.3.attentions.1", "up_blocks.3.attentions.2",
             "mid_block.attentions.0"]
LIBTORCH_113_OPS = {s.name for s in torch._C._jit_get_all_schemas()}


def image(seed, size=8 * R):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def baddbmm_into_zeroed_memory():
    """torch 1.13's small-product CPU baddbmm computes beta * out + alpha * acc on its
    freshly allocated output, so with diffusers' beta = 0 a NaN left in that memory
    comes out as NaN (docs/export-nan.md). Rerunning does not help: the NaN result goes
    back to the allocator and the next call can get the same memory again. Inside this
    context every torch.baddbmm writes into zeroed memory instead, which gives exactly
    what it was asked for, 0 + alpha * acc, bit for bit."""
    real = torch.baddbmm

    def zeroed(input, batch1, batch2, *, beta=1, alpha=1):
        out = batch1.new_zeros(batch1.shape[0], batch1.shape[1], batch2.shape[2])
        return real(input, batch1, batch2, beta=beta, alpha=alpha, out=out)

    torch.baddbmm = zeroed
    try:
        yield
    finally:
        torch.baddbmm = real


def diffusers_reference(flavour, x, layers):
    """Diffusers' own forward (stock AttnProcessor and get_attention_scores), recording
    the probabilities of the attn1 modules of `layers`, averaged over heads."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    unet, vae, emb = tiny_sd.build(flavour)
    unet.set_attn_processor(AttnProcessor())
    vae.set_attn_processor(AttnProcessor())
    names = {m: n for n, m in unet.named_modules() if isinstance(m, Attention)}
    maps = {}
    original = Attention.get_attention_scores

    def recording(self, query, key, attention_mask=None):
        probs = original(self, query, key, attention_mask)
        name = names.get(self, "")
        if name.endswith(".transformer_blocks.0.attn1"):
            layer = name[: -len(".transformer_blocks.0.attn1")]
            b = probs.shape[0] // self.heads
            maps[layer] = probs.float().reshape(b, self.heads, *probs.shape[1:]).mean(1)[0]
        return probs

    Attention.get_attention_scores = recording
    try:
        # The tiny UNet's 2x2 mid block takes baddbmm's small-product path.
        with baddbmm_into_zeroed_memory(), torch.no_grad():
            latent = vae.encode(x * 2.0 - 1.0).latent_dist.mode() * vae.config.scaling_factor
            unet(latent, torch.tensor([100]), encoder_hidden_states=emb)
    finally:
        Attention.get_attention_scores = original
    bad = [n for n in layers if not bool(torch.isfinite(maps[n]).all())]
    if bad:
        raise AssertionError(f"diffusers' reference forward ({flavour}) gave non-finite maps: " + ", ".join(bad))
    return {n: maps[n] for n in layers}


def graph_kinds(module):
    kinds = set()

    def walk(block):
        for node in block.nodes():
            kinds.add(node.kind())
            for b in node.blocks():
                walk(b)

    walk(module.inlined_graph)
    return kinds


def run_m2n2(*args):
    p = subprocess.run([M2N2, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError("m2n2 " + " ".join(args) + " failed: " + p.stderr.strip())
    return p.stdout


class Export(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.archives = {}
        for flavour in tiny_sd.FLAVOURS:
            unet, vae, emb = tiny_sd.build(flavour)
            out = os.path.join(cls.tmp.name, flavour + ".pt")
            layers, grids = export_sd.export(unet, vae, emb, out, model_id="tiny-" + flavour, resolution=R,
                                             all_layers=True, device="cpu", log=lambda _: None)
            cls.archives[flavour] = (out, layers, grids)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def meta(self, path):
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("extra/m2n2.json"))
            return json.loads(z.read(name))

    def test_all_layers_are_the_16_sd_names_with_square_row_stochastic_maps(self):
        for flavour, (path, layers, grids) in self.archives.items():
            with self.subTest(flavour=flavour):
                self.assertEqual(sorted(layers), sorted(SD_LAYERS))
                out = torch.jit.load(path)(image(3))
                for name, (gh, gw) in zip(layers, grids):
                    n = gh * gw
                    self.assertEqual(gh, gw)
                    self.assertEqual(tuple(out[name].shape), (n, n), name)
                    self.assertEqual(out[name].dtype, torch.float32)
                    self.assertLess(float((out[name].sum(-1) - 1).abs().max()), 1e-5, name)
                self.assertEqual(grids[layers.index("up_blocks.3.attentions.0")], (R, R))
                self.assertEqual(grids[layers.index("mid_block.attentions.0")], (R // 8, R // 8))

    def test_capture_equals_diffusers_attention_probabilities(self):
        x = image(5)
        for flavour, (path, layers, _) in self.archives.items():
            with self.subTest(flavour=flavour):
                unet, vae, emb = tiny_sd.build(flavour)
                model = export_sd.Exported(vae, unet, emb, 100, layers, torch.float32).eval()
                with torch.no_grad():
                    ours = model(x)
                ref = diffusers_reference(flavour, x, layers)
                for name in layers:
                    diff = float((ours[name] - ref[name]).abs().max())
                    self.assertLess(diff, 1e-6, f"{flavour} {name}: {diff}")

    def test_trace_reloaded_reproduces_eager_on_another_image(self):
        x = image(7)
        for flavour, (path, layers, _) in self.archives.items():
            with self.subTest(flavour=flavour):
                unet, vae, emb = tiny_sd.build(flavour)
                eager = export_sd.Exported(vae, unet, emb, 100, layers, torch.float32).eval()
                with torch.no_grad():
                    a = eager(x)
                    b = torch.jit.load(path)(x)
                for name in layers:
                    self.assertLess(float((a[name] - b[name]).abs().max()), 1e-6, name)

    def test_archive_is_device_neutral_and_uses_only_libtorch_113_ops(self):
        for flavour, (path, _, _) in self.archives.items():
            with self.subTest(flavour=flavour):
                m = torch.jit.load(path)
                self.assertEqual(device_constants(m), [])
                kinds = graph_kinds(m)
                self.assertFalse([k for k in kinds if "scaled_dot_product" in k or "flash" in k])
                unknown = [k for k in kinds if k.startswith("aten::") and k not in LIBTORCH_113_OPS]
                self.assertEqual(unknown, [])
                meta = self.meta(path)
                self.assertEqual(meta["format"], "m2n2-attention/1")
                self.assertTrue(meta["device_neutral"])
                self.assertEqual(meta["traced_device"], "cpu")
                self.assertEqual(meta["dtype"], "fp32")
                self.assertEqual(meta["input_size"], [8 * R, 8 * R])

    def test_committed_fixture_is_this_export_of_the_real_diffusers_classes(self):
        import make_sd_fixture

        committed = torch.jit.load(os.path.join(ROOT, "models", "tiny-sd2-attention.pt"))
        fresh = torch.jit.load(self.archives[make_sd_fixture.FLAVOUR][0])
        x = image(9)
        a, b = committed(x), fresh(x)
        self.assertEqual(sorted(a.keys()), sorted(SD_LAYERS))
        for name in SD_LAYERS:
            self.assertLess(float((a[name] - b[name]).abs().max()), 1e-6, name)

    def test_device_check_catches_a_trace_tied_to_a_device(self):
        class Tied(torch.nn.Module):
            def forward(self, x):
                return x + torch.zeros(1, device=x.device)

        self.assertEqual(len(device_constants(torch.jit.trace(Tied(), torch.rand(2)))), 1)

    def test_scores_follow_diffusers_numerics_with_and_without_upcast(self):
        from diffusers.models.attention_processor import Attention

        g = torch.Generator().manual_seed(11)
        for upcast in (False, True):
            for dtype in (torch.float32, torch.bfloat16):
                with self.subTest(upcast=upcast, dtype=dtype):
                    attn = Attention(query_dim=32, heads=4, dim_head=8, upcast_attention=upcast).to(dtype)
                    q = (torch.randn(4, 64, 8, generator=g) * 8).to(dtype)
                    k = (torch.randn(4, 64, 8, generator=g) * 8).to(dtype)
                    ref = attn.get_attention_scores(q, k, None)
                    ours = scores_like_diffusers(attn, q, k, None)
                    self.assertEqual(ours.dtype, ref.dtype)
                    self.assertTrue(torch.equal(ours, ref))
                    mask = torch.zeros(4, 1, 64, dtype=dtype)
                    mask[..., :5] = -10000.0
                    self.assertTrue(torch.equal(scores_like_diffusers(attn, q, k, mask),
                                                attn.get_attention_scores(q, k, mask)))
        # Scaling after a low-precision product (the old capture) is not diffusers'.
        attn = Attention(query_dim=32, heads=4, dim_head=8, upcast_attention=True).to(torch.bfloat16)
        q = (torch.randn(4, 64, 8, generator=g) * 8).to(torch.bfloat16)
        k = (torch.randn(4, 64, 8, generator=g) * 8).to(torch.bfloat16)
        late = torch.softmax(torch.bmm(q, k.transpose(-1, -2)) * attn.scale, -1)
        self.assertFalse(torch.equal(late, attn.get_attention_scores(q, k, None)))

    def test_scores_do_not_read_uninitialised_output(self):
        # torch 1.13's small-product CPU baddbmm reads its output even with beta = 0:
        # NaN left in that memory (the allocator's choice) became an all-NaN map.
        # `out=` stands in for the allocator here.
        g = torch.Generator().manual_seed(3)
        q, k = torch.rand(4, 4, 8, generator=g), torch.rand(4, 4, 8, generator=g)
        want = 0.5 * torch.bmm(q, k.transpose(-1, -2))
        base, beta = score_input(q, None)
        out = torch.full((4, 4, 4), float("nan"))
        torch.baddbmm(base, q, k.transpose(-1, -2), beta=beta, alpha=0.5, out=out)
        self.assertTrue(torch.equal(out, want))
        stale = torch.full((4, 4, 4), float("nan"))
        torch.baddbmm(q[:1, :1, :1], q, k.transpose(-1, -2), beta=0, alpha=0.5, out=stale)
        if not torch.isnan(stale).any():
            self.skipTest("this torch's baddbmm ignores its output with beta = 0 (ours is still exact)")

    def test_reference_forward_is_immune_to_stale_memory(self):
        # diffusers_reference's guard against the fault above, on diffusers' own
        # get_attention_scores at the 2x2 mid block's size, each call after NaN was left
        # in 1 to 32 freed blocks of the scores' size. Without the guard, 8 to 38 of these
        # 64 calls returned NaN in fresh processes on the CI machine.
        from diffusers.models.attention_processor import Attention

        real = torch.baddbmm
        g = torch.Generator().manual_seed(5)
        attn = Attention(query_dim=32, heads=4, dim_head=8, upcast_attention=True)
        q, k = torch.randn(4, 4, 8, generator=g), torch.randn(4, 4, 8, generator=g)
        want = scores_like_diffusers(attn, q, k, None)
        with baddbmm_into_zeroed_memory():
            for n in list(range(1, 33)) * 2:
                stale = [torch.full((4, 4, 4), float("nan")) for _ in range(n)]
                del stale
                self.assertTrue(torch.equal(attn.get_attention_scores(q, k, None), want), n)
        self.assertIs(torch.baddbmm, real)

    @unittest.skipUnless(torch.cuda.is_available(), "needs CUDA")
    def test_fp16_on_cuda_follows_diffusers(self):
        from diffusers.models.attention_processor import Attention

        for upcast in (False, True):
            attn = Attention(query_dim=32, heads=4, dim_head=8, upcast_attention=upcast).cuda().half()
            q = (torch.randn(4, 256, 8, device="cuda") * 30).half()
            k = (torch.randn(4, 256, 8, device="cuda") * 30).half()
            self.assertTrue(torch.equal(scores_like_diffusers(attn, q, k), attn.get_attention_scores(q, k)))

    def test_main_with_a_stand_in_pipeline(self):
        out = os.path.join(self.tmp.name, "main.pt")
        seen = []

        def load(model, dtype):
            seen.append((model, dtype))
            return tiny_sd.StandInPipeline("sd2")

        export_sd.main(["--model", "tiny/sd2", "--out", out, "--resolution", str(R), "--device", "cpu"], load=load)
        self.assertEqual(seen, [("tiny/sd2", torch.float32)])
        meta = self.meta(out)
        self.assertEqual(meta["model_id"], "tiny/sd2")
        self.assertEqual([l["name"] for l in meta["layers"]], export_sd.M2N2_LAYERS)
        self.assertEqual([l["weight"] for l in meta["layers"]], [0.5, 0.5])
        self.assertFalse(os.path.exists(out + ".tmp"))
        # The default is the authors' grid; --fp16 on the CPU is refused before loading.
        self.assertEqual(export_sd.build_parser().parse_args(["--model", "x", "--out", "y"]).resolution, 128)
        with self.assertRaises(SystemExit) as e:
            export_sd.main(["--model", "x", "--out", out + "2", "--fp16", "--device", "cpu"], load=load)
        self.assertEqual(e.exception.code, 2)
        self.assertEqual(len(seen), 1)
        self.assertFalse(os.path.exists(out + "2"))

    def test_m2n2_loads_the_archive_and_segments_as_the_python_maps_predict(self):
        if not M2N2 or not os.path.exists(M2N2):
            self.skipTest("no m2n2 binary given")
        import cv2

        img = os.path.join(ROOT, "examples", "images", "kite.png")
        rgb = cv2.cvtColor(cv2.imread(img), cv2.COLOR_BGR2RGB)
        for flavour in ("sd1", "sd2-upcast"):
            with self.subTest(flavour=flavour):
                unet, vae, emb = tiny_sd.build(flavour)
                out = os.path.join(self.tmp.name, flavour + "-m2n2.pt")
                export_sd.export(unet, vae, emb, out, model_id="tiny-" + flavour, resolution=R, device="cpu",
                                 log=lambda _: None)
                # What the loader wrote ...
                npy = os.path.join(self.tmp.name, flavour + "-loader.npy")
                run_m2n2("attention", "--image", img, "--source", "torchscript:" + out, "--npy", npy,
                         "--no-cache", "--device", "cpu")
                loaded = np.load(npy)
                # ... equals the Python eager maps, combined with the export's weights,
                # on the same INTER_AREA resize the loader does.
                small = cv2.resize(rgb, (8 * R, 8 * R), interpolation=cv2.INTER_AREA)
                x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255.0
                unet, vae, emb = tiny_sd.build(flavour)
                model = export_sd.Exported(vae, unet, emb, 100, export_sd.M2N2_LAYERS, torch.float32).eval()
                with torch.no_grad():
                    maps = model(x)
                python = sum(w * maps[n] for n, w in zip(export_sd.M2N2_LAYERS, export_sd.M2N2_WEIGHTS))
                python = python.numpy().reshape(R, R, R, R).astype(np.float32)
                self.assertEqual(loaded.shape, (R, R, R, R))
                # m2n2 keeps attention as fp16 in memory (the cache's format): equal to
                # the Python maps up to fp16 rounding (relative 2^-11).
                err = np.abs(loaded - python) / np.maximum(np.abs(python), 6.1e-5)
                self.assertLess(float(err.max()), 2.0 ** -10)
                # file: sources are read as they are; the TorchScript path keeps fp16 (above),
                # so the Python maps go in rounded the same way: the same maps, bit for bit.
                python16 = python.astype(np.float16).astype(np.float32)
                # (equal, or one fp16 step apart where the two sat on either side of a rounding boundary)
                self.assertLess(float((np.abs(loaded - python16) / np.maximum(python16, 6.1e-5)).max()), 2.0 ** -10)
                pynpy = os.path.join(self.tmp.name, flavour + "-python.npy")
                np.save(pynpy, python16)
                # segment from the archive == segment from the Python maps.
                masks = []
                for source in ("torchscript:" + out, "file:" + pynpy):
                    png = os.path.join(self.tmp.name, flavour + "-" + source.split(":")[0] + ".png")
                    run_m2n2("segment", "--image", img, "--source", source, "--device", "cpu", "--no-cache",
                             "--click", "250,110,+", "--click", "40,40,-", "--out", png)
                    masks.append(cv2.imread(png, cv2.IMREAD_UNCHANGED))
                self.assertEqual(masks[0].shape, rgb.shape[:2])
                self.assertGreater(int((masks[0] > 0).sum()), 0)
                self.assertTrue(np.array_equal(masks[0], masks[1]))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
