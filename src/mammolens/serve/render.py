"""Server-side rendering of mammograms and heatmaps to PNG for the viewer.

* :func:`load_display` decodes a stored DICOM once (LRU-cached): raw values after the
  Modality LUT, the default window (the file's VOI window, else the 0.5-99.5 percentiles
  of the breast), MONOCHROME1 handled, and whether the image must be mirrored for the
  hanging protocol.
* Hanging protocol (mirror image): right breasts are shown with the chest wall on the
  right edge of their viewport, left breasts with the chest wall on the left, so the two
  breasts face each other back to back. The chest-wall side is found from the pixels
  (the breast is brighter near the chest wall), as DICOM orientation is often missing.
* :func:`render_png` applies window centre/width in raw units (linear VOI function,
  DICOM PS3.3 C.11.2.1.2) and downsamples to a maximum height.
* :func:`heatmap_png` renders a heatmap (original geometry) as RGBA: a colour map with
  alpha growing with the value, so low values stay transparent.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Display:
    raw: np.ndarray  # float32, modality-LUT applied, as stored (not mirrored)
    center: float
    width: float
    invert: bool  # MONOCHROME1
    mirror: bool  # flip left-right for the hanging protocol
    vmin: float
    vmax: float


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_cache = _LRU(16)


def load_display(path: str | Path, laterality: str) -> Display:
    """Decode ``path`` (cached) and compute its default window and hanging orientation."""
    key = (str(path), laterality)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(str(path))
    arr = ds.pixel_array
    raw = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    invert = str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1"
    vmin, vmax = float(raw.min()), float(raw.max())
    c = getattr(ds, "WindowCenter", None)
    w = getattr(ds, "WindowWidth", None)
    center = width = None
    if c is not None and w is not None:
        try:
            center = float(c[0] if isinstance(c, pydicom.multival.MultiValue) else c)
            width = float(w[0] if isinstance(w, pydicom.multival.MultiValue) else w)
        except (TypeError, ValueError):
            center = width = None
    if center is None or not width or width <= 0:
        sample = raw[:: max(1, raw.shape[0] // 256), :: max(1, raw.shape[1] // 256)]
        bright = sample if not invert else vmax - sample
        fg = sample[bright > np.percentile(bright, 30)]
        lo, hi = np.percentile(fg if fg.size else sample, [0.5, 99.5])
        lo = min(lo, float(sample.min()))
        center, width = (lo + hi) / 2.0, max(hi - lo, 1.0)
    img01 = _window(raw, center, width, invert)
    from mammolens.data.preprocess import chest_wall_on_left  # the rule preprocessing flips by

    mirror = chest_wall_on_left(img01) if laterality == "R" else not chest_wall_on_left(img01)
    if laterality not in ("L", "R"):
        mirror = False
    d = Display(raw, float(center), float(width), invert, bool(mirror), vmin, vmax)
    _cache.put(key, d)
    return d


def _window(raw: np.ndarray, center: float, width: float, invert: bool) -> np.ndarray:
    width = max(float(width), 1.0)
    out = np.clip((raw - (center - 0.5)) / (width - 1.0 if width > 1 else 1.0) + 0.5, 0.0, 1.0)
    return 1.0 - out if invert else out


def _target_size(h: int, w: int, max_h: int) -> tuple[int, int]:
    if h <= max_h:
        return h, w
    return max_h, max(1, int(round(w * max_h / h)))


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    interp = cv2.INTER_AREA if h < arr.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(arr, (w, h), interpolation=interp)


def _png(arr_u8: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr_u8, mode=mode).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def render_png(
    d: Display,
    *,
    center: float | None = None,
    width: float | None = None,
    max_h: int = 1024,
    hanging: bool = True,
) -> bytes:
    """8-bit grey PNG of the image with the given window (default: the file's)."""
    c = d.center if center is None else float(center)
    w = d.width if width is None else float(width)
    h, wd = _target_size(*d.raw.shape, max_h)
    small = _resize(d.raw, (h, wd))
    img = (_window(small, c, w, d.invert) * 255.0 + 0.5).astype(np.uint8)
    if hanging and d.mirror:
        img = img[:, ::-1]
    return _png(np.ascontiguousarray(img), "L")


def breast_mask(raw: np.ndarray, d: Display) -> np.ndarray:
    """Soft [0, 1] mask of the breast (tissue brighter than the air background), so the
    overlay does not colour the background, where the model's map means nothing."""
    import cv2

    span = max(d.vmax - d.vmin, 1e-6)
    rel = (raw - d.vmin) / span
    if d.invert:
        rel = 1.0 - rel
    mask = (rel > 0.04).astype(np.float32)
    k = max(3, (min(raw.shape) // 64) | 1)
    return cv2.GaussianBlur(mask, (k, k), 0)


def heatmap_png(
    heat: np.ndarray, d: Display, *, max_h: int = 1024, hanging: bool = True, floor: float = 0.2, regions: int = 3
) -> bytes:
    """RGBA PNG of ``heat`` (original geometry, [0, 1]) sized like :func:`render_png`.

    The ``regions`` highest-scoring regions (:func:`mammolens.data.heatmap_io.top_regions`,
    the same boxes ``predict`` lists) are outlined and numbered by rank.
    """
    import cv2

    from mammolens.data.heatmap_io import top_regions
    from mammolens.explain.colormap import heat_colormap

    h, w = _target_size(*d.raw.shape, max_h)
    hm = _resize(np.asarray(heat, dtype=np.float32), (h, w))
    hm = np.clip(hm, 0.0, 1.0)
    lo, hi = float(hm.min()), float(hm.max())
    # contrast-stretched to the map's own range: the strongest evidence is bright and
    # opaque, the weakest transparent (the absolute scores are shown as numbers)
    norm = (hm - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(hm)
    rgb = heat_colormap(norm)
    alpha = np.clip((norm - floor) / (1.0 - floor), 0.0, 1.0) ** 0.8 * 255.0
    alpha *= breast_mask(_resize(d.raw, (h, w)), d)
    rgba = np.dstack([rgb, alpha]).astype(np.uint8)
    mirror = hanging and d.mirror
    if mirror:
        rgba = rgba[:, ::-1]
    rgba = np.ascontiguousarray(rgba)
    boxes = top_regions(hm, regions) if regions > 0 and hi - lo > 1e-6 else []
    t = max(1, round(h / 400))
    for reg in boxes:
        x0, x1 = (w - reg["x1"], w - reg["x0"]) if mirror else (reg["x0"], reg["x1"])
        p0, p1 = (int(x0), int(reg["y0"])), (max(int(x0), int(x1) - 1), max(int(reg["y0"]), int(reg["y1"]) - 1))
        # a light box with a dark halo: visible on bright tissue and on the colour layer
        cv2.rectangle(rgba, p0, p1, (0, 0, 0, 255), t + 2)
        cv2.rectangle(rgba, p0, p1, (120, 230, 255, 255), t)
        org = (p0[0] + 2 * t, max(p0[1] - 3 * t, 12 * t))
        cv2.putText(rgba, str(reg["rank"]), org, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * t, (0, 0, 0, 255), t + 2, cv2.LINE_AA)
        cv2.putText(rgba, str(reg["rank"]), org, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * t, (120, 230, 255, 255), t, cv2.LINE_AA)
    return _png(np.ascontiguousarray(rgba), "RGBA")
