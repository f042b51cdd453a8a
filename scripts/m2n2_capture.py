"""The capture code lives in python/m2n2/capture.py (shipped as m2n2.capture). The
scripts run from a source tree, where the compiled m2n2 extension may be absent, so
this loads that one file as the module `m2n2_capture`."""
import importlib.util
import os
import sys

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "m2n2", "capture.py")
_spec = importlib.util.spec_from_file_location(__name__, _PATH)
_module = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _module
_spec.loader.exec_module(_module)
