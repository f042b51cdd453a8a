"""Import-only stand-in for the `safetensors` package (a Rust extension with no
Debian package). diffusers imports it at start but needs it only to read weight
files, which m2n2's tests never do: every function here raises."""


def _unavailable(*args, **kwargs):
    raise RuntimeError("safetensors stand-in: reading weight files is not available in m2n2's tests")


safe_open = _unavailable


class SafetensorError(Exception):
    pass
