"""m2n2: training-free interactive segmentation from attention (M2N2, CVPR 2025).

    import m2n2
    engine = m2n2.Engine()                        # the embedded default source
    session = engine.open(rgb)                    # H x W x 3 uint8, RGB
    result = session.segment([(120, 80, True)])   # result.mask: H x W bool

`attention=` takes the maps your own PyTorch computed (see m2n2.capture), and
`m2n2.Predictor` has SAM's set_image / predict. Errors are ValueError (a bad argument)
or RuntimeError, with the command line's one-line messages. LibTorch is loaded only
for a TorchScript source (or CUDA, diffseg, ncut).
"""
from types import SimpleNamespace

import numpy as _np

from . import _m2n2

__all__ = ["Engine", "Session", "SegmentResult", "Predictor", "MemoryLimitError"]

MemoryLimitError = _m2n2.MemoryLimitError
Session = _m2n2.Session


class SegmentResult(SimpleNamespace):
    """`mask` (H x W bool), `soft` (H x W float32 distance map, 1 = the boundary) and
    `choices` (per click: the threshold index, threshold and score chosen)."""


def _segment(self, clicks):
    """The mask from all clicks, a sequence of (x, y, positive) in image pixels."""
    mask, soft, choices = self._segment(clicks)
    return SegmentResult(mask=mask, soft=soft, choices=choices)


Session.segment = _segment


def _as_array(value, what):
    """A NumPy view of an array-like: ndarray, `__array__` or DLPack (CPU)."""
    if isinstance(value, _np.ndarray):
        return value
    if hasattr(value, "__array__"):
        try:
            return _np.asarray(value)
        except Exception as e:  # e.g. a tensor on a GPU
            raise ValueError("%s: cannot be read as an array on the CPU (%s)" % (what, str(e).splitlines()[0]))
    if hasattr(value, "__dlpack__"):
        try:
            return _np.from_dlpack(value)
        except Exception as e:
            raise ValueError("%s: cannot be read through DLPack on the CPU (%s)" % (what, str(e).splitlines()[0]))
    raise ValueError("%s: expected an array (NumPy, __array__ or DLPack), got %s" % (what, type(value).__name__))


def _attention_map(label, value, weight):
    a = _as_array(value, label)
    if a.dtype not in (_np.float32, _np.float16):
        raise ValueError("%s: attention must be float32 or float16, got dtype '%s'" % (label, a.dtype))
    fp16 = a.dtype == _np.float16
    return (label, _np.ascontiguousarray(a, dtype=_np.float32), bool(fp16), float(weight))


def _attention_maps(attention):
    """The maps handed to the extension: [(label, float32 array, was fp16, weight)].

    `attention`: one (h,w,h,w) or (N,N) array, or a dict {layer: array} or
    {layer: {"attention": array, "weight": w}} (maps of equal weight when none is given),
    as m2n2.capture returns it."""
    if attention is None:
        return []
    if isinstance(attention, dict):
        if not attention:
            raise ValueError("attention: no maps")
        out = []
        for name, v in attention.items():
            label = "attention[%r]" % (name,)
            if isinstance(v, dict):
                if "attention" not in v:
                    raise ValueError("%s: expected an array or {'attention': array, 'weight': w}" % label)
                w = v.get("weight", 1.0)
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not (w >= 0 and w < float("inf")):
                    raise ValueError("%s: weight must be a finite number >= 0" % label)
                out.append(_attention_map(label, v["attention"], w))
            else:
                out.append(_attention_map(label, v, 1.0))
        return out
    return [_attention_map("attention", attention, 1.0)]


def _image(image):
    a = _as_array(image, "image")
    if a.dtype != _np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError("image: expected an HxWx3 uint8 RGB array, got %s %s" % (a.dtype, tuple(a.shape)))
    return a


class Engine(_m2n2.Engine):
    """Engine(source=None, device="cpu", threads=0, cache_dir=None, **params)

    source: as the command line's --source ("default[:key=value,...]",
    "torchscript:PATH", "file:PATH"); None = the embedded default source.
    device: "cpu", "cuda" or "auto". threads: worker threads (0 = all cores; the setting
    is process-wide). cache_dir: attention cache folder (None = no cache).
    Keywords: grid (default source), max_memory_bytes, progress (callable(stage,
    fraction), called while a session is prepared), warn (callable(message); default:
    warnings.warn), and the M2N2 parameters by their library names: temperature,
    ipf_iterations, precision, two_pass_sinkhorn, libtorch, threshold, max_iterations,
    linear_interpolation, spatial_sigma, range_sigma, flood_fill, max_area,
    quantization, use_prior, use_edge, use_pos, use_neg, max_table_bytes, max_side."""

    def open(self, image, attention=None, name=""):
        """The Session of one image (H x W x 3 uint8 RGB). `attention`: None (the
        engine's source), or the maps computed elsewhere (see _attention_maps)."""
        return self._open(_image(image), _attention_maps(attention), str(name))


class Predictor:
    """SAM's SamPredictor shape over an Engine: set_image(rgb), then predict()."""

    def __init__(self, engine):
        self.engine = engine
        self.session = None

    def set_image(self, image, image_format="RGB", attention=None):
        if image_format not in ("RGB", "BGR"):
            raise ValueError("image_format: expected 'RGB' or 'BGR'")
        a = _image(image)
        if image_format == "BGR":
            a = a[..., ::-1]
        self.session = self.engine.open(a, attention=attention)
        self.session.prepare()

    def reset_image(self):
        self.session = None

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=False,
                return_logits=False):
        """(masks (1,H,W) bool, scores (1,), soft (1,H,W) float32) from points (N,2) in
        pixels (x, y) and labels (N,) (1 = foreground, 0 = background). M2N2 makes one
        mask: multimask_output gives that one; boxes and mask inputs are not supported."""
        if self.session is None:
            raise RuntimeError("an image must be set with set_image() before predict()")
        if box is not None or mask_input is not None:
            raise ValueError("box, mask_input: M2N2 takes point prompts only")
        if point_coords is None or point_labels is None:
            raise ValueError("point_coords, point_labels: at least one point is needed")
        pc = _np.asarray(_as_array(point_coords, "point_coords"), dtype=_np.float64)
        pl = _as_array(point_labels, "point_labels")
        if pc.ndim != 2 or pc.shape[1] != 2 or pl.ndim != 1 or pl.shape[0] != pc.shape[0]:
            raise ValueError("point_coords, point_labels: expected shapes (N,2) and (N,), got %s and %s"
                             % (tuple(pc.shape), tuple(pl.shape)))
        clicks = [(float(x), float(y), bool(l > 0)) for (x, y), l in zip(pc, pl)]
        r = self.session.segment(clicks)
        scores = _np.array([max((c["score"] for c in r.choices), default=0.0)], dtype=_np.float32)
        return r.mask[None], scores, r.soft[None]
