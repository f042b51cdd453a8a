"""Derives test archives from a TorchScript attention fixture (test_sd_fixture.sh):
fp16.pt (metadata says fp16), flaky.pt (non-finite output on the first call only),
nan.pt (non-finite output always).

    /usr/bin/python3 tests/cli/make_variants.py FIXTURE OUTDIR
"""
import json, sys, torch
fix, tmp = sys.argv[1], sys.argv[2]
extra = {"m2n2.json": ""}
m = torch.jit.load(fix, _extra_files=extra)
meta = json.loads(extra["m2n2.json"])
layers = [l["name"] for l in meta["layers"]]
torch.jit.save(m, tmp + "/fp16.pt", _extra_files={"m2n2.json": json.dumps(dict(meta, dtype="fp16"))})


class Flaky(torch.nn.Module):
    def __init__(self, inner, bad_calls: int):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.bad_calls = bad_calls

    def forward(self, x: torch.Tensor):
        out = self.inner(x)
        self.calls += 1
        if self.calls <= self.bad_calls:
            for k in out.keys():
                out[k] = out[k] * float("nan")
        return out


for name, bad in (("flaky", 1), ("nan", 1000)):
    torch.jit.save(torch.jit.script(Flaky(m, bad)), tmp + "/" + name + ".pt", _extra_files={"m2n2.json": json.dumps(meta)})
