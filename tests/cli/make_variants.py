"""Derives test archives from a TorchScript attention fixture (test_sd_fixture.sh):
fp16.pt (metadata says fp16), flaky.pt (non-finite output on the first call only),
reweighted.pt (other layer weights in the metadata),
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

# reweighted.pt: the same network, M2N2's layers weighted 1 / 0 instead of 0.5 / 0.5.
weights = {"up_blocks.3.attentions.0": 1.0, "up_blocks.3.attentions.1": 0.0}
relayered = dict(meta, layers=[dict(l, weight=weights.get(l["name"], l["weight"])) for l in meta["layers"]])
torch.jit.save(m, tmp + "/reweighted.pt", _extra_files={"m2n2.json": json.dumps(relayered)})
