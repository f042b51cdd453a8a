#!/usr/bin/env python3
"""`m2n2 next-click` against the reference click vectors (tests/data/clicks, a copy of
shared/testdata/clicks), both protocols."""
import json
import subprocess
import sys

exe, root = sys.argv[1], sys.argv[2]
d = f"{root}/tests/data/clicks"
cases = json.load(open(f"{d}/clicks.json"))["cases"]
passed = failed = 0
for c in cases[::4]:  # every 4th case through the CLI; the unit test checks them all
    for proto in ("m2n2", "ritm"):
        cmd = [exe, "next-click", "--gt", f"{d}/{c['gt']}", "--pred", f"{d}/{c['pred']}",
               "--void", f"{d}/{c['void']}", "--protocol", proto]
        for p in c["previous_clicks"]:
            cmd += ["--prev", f"{p['x']},{p['y']}"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        got = json.loads(out.stdout) if out.returncode == 0 else None
        want = {k: c["expected"][proto][k] for k in ("x", "y", "positive")}
        if got == want:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {c['name']} {proto}: got {got}, want {want} {out.stderr}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
