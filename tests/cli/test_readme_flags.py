#!/usr/bin/python3
"""Every flag that `m2n2 SUBCOMMAND --help` offers is named in README.md or in one of the
guides under docs/ it indexes (users read them; a flag added to the code without a word there
is a defect)."""
import glob
import os
import re
import subprocess
import sys

m2n2, readme = sys.argv[1], sys.argv[2]
docs = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(readme)), "docs", "**", "*.md"), recursive=True))
text = "\n".join(open(p, encoding="utf-8").read() for p in [readme] + docs)
def subcommands(help_text):
    if "Subcommands:" not in help_text:
        return []
    return re.findall(r"^  ([a-z][a-z-]+)\s{2,}\S", help_text.split("Subcommands:")[1], re.M)


top = subprocess.run([m2n2, "--help"], capture_output=True, text=True).stdout
todo = [[s] for s in subcommands(top)]
assert len(todo) >= 10, f"subcommands not found in --help: {todo}"
missing, seen = [], 0
while todo:
    cmd = todo.pop(0)
    out = subprocess.run([m2n2, *cmd, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} --help: exit {out.returncode}"
    seen += 1
    nested = subcommands(out.stdout)
    todo += [cmd + [n] for n in nested]
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", out.stdout)) - {"--help"}
    assert flags or nested, f"{' '.join(cmd)}: no flags found in its --help"
    for f in sorted(flags):
        if not re.search(re.escape(f) + r"(?![a-z0-9-])", text):
            missing.append(f"{' '.join(cmd)} {f}")
if missing:
    print("flags in --help but not in README.md or docs/*.md: " + ", ".join(missing))
    sys.exit(1)
print(f"{seen} commands: every flag of their --help is in README.md or docs/")
