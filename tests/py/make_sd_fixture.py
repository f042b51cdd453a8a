#!/usr/bin/env python3
"""Builds models/tiny-sd2-attention.pt: the tiny random-weight SD 2.x configuration of
tests/py/tiny_sd.py, made from the real diffusers classes and exported by
scripts/export_sd_attention.py with all 16 self-attention layers at grid 16
(input 128 x 128). Needs the pinned diffusers (../shared/vendor, see its README):

    V=../shared/vendor
    PYTHONPATH=$V/diffusers-0.31.0/src:$V/huggingface_hub-0.36.2/src:tests/py_stubs \\
        /usr/bin/python3 tests/py/make_sd_fixture.py --out models/tiny-sd2-attention.pt
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "scripts")]

import export_sd_attention as export_sd  # noqa: E402
import tiny_sd  # noqa: E402

FLAVOUR = "sd2"
RESOLUTION = 16


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "models", "tiny-sd2-attention.pt"))
    args = ap.parse_args()
    unet, vae, emb = tiny_sd.build(FLAVOUR)
    export_sd.export(unet, vae, emb, args.out, model_id="m2n2/tiny-sd2-diffusers", resolution=RESOLUTION,
                     all_layers=True, device="cpu")


if __name__ == "__main__":
    main()
