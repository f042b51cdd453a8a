"""Import-only stand-in, see __init__.py."""
from . import _unavailable

load_file = _unavailable
save_file = _unavailable
load = _unavailable
save = _unavailable
