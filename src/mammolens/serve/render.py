"""Server-side rendering of mammograms and heatmaps to PNG for the viewer.

* :func:`load_display` decodes a stored DICOM through the one pixel pipeline,
  :func:`mammolens.io.read_image` with the model's window, so the radiologist sees the
  intensities the model saw: the VOI LUT Sequence, the window with its VOI LUT Function
  (LINEAR, LINEAR_EXACT, SIGMOID as GE uses), Bits Stored, MONOCHROME1 and the
  Presentation LUT Shape are all applied there, once. Decoding runs in a child process
  (:func:`mammolens.io.sandbox.read_image_isolated`): an image that crashes its decoder
  is a clean :class:`~mammolens.errors.InputError`, never a dead server. Decoded images
  are kept in a :class:`RenderCache` sized in bytes.
* Hanging protocol (mirror image): right breasts are shown with the chest wall on the
  right edge of their viewport, left breasts with the chest wall on the left, so the two
  breasts face each other back to back. The chest-wall side is found from the pixels
  (the breast is brighter near the chest wall), as DICOM orientation is often missing.
* :func:`render_png` applies the user's window (centre/width in display units: the
  model's input intensities, 0-1; default centre 0.5, width 1: exactly those
  intensities) and downsamples to a maximum height.
* :func:`heatmap_png` renders a heatmap (original geometry) as RGBA: a colour map with
  alpha growing with the value, so low values stay transparent.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: seconds a decode may take in its child process before it is declared hung
DECODE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Display:
    """A decoded image ready for the viewer."""

    pixels: np.ndarray  # float32 in [0, 1], dense tissue bright: the model's input (not mirrored)
    mirror: bool  # flip left-right for the hanging protocol
    voi: str = ""  # the VOI transformation the reader applied
    center: float = 0.5  # default window (display units): the model's intensities as they are
    width: float = 1.0
    vmin: float = 0.0
    vmax: float = 1.0

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)


class RenderCache:
    """Least-recently-used cache of :class:`Display` objects, bounded in bytes.

    A full-field mammogram decodes to 50-150 MB of float32; a count of entries says
    nothing about memory. An image larger than the whole budget is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._d: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key, value: Display) -> None:
        size = value.nbytes
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size > self.max_bytes:
                return
            self._d[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._d:
                _k, v = self._d.popitem(last=False)
                self._bytes -= v.nbytes

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._bytes = 0


def _decode(path: str | Path, window: str | int):
    from mammolens.io.sandbox import read_image_isolated

    return read_image_isolated(path, timeout=DECODE_TIMEOUT_S, voi=window, validate=False)


def load_display(
    path: str | Path,
    laterality: str,
    *,
    cache: RenderCache | None = None,
    window: str | int = "auto",
    decode: Callable | None = None,
) -> Display:
    """Decode ``path`` as the model does (in a child process; cached) and find its
    hanging orientation.

    Parameters
    ----------
    window
        The model's window (``preprocess.window`` of the run): ``"auto"`` or an index.
    decode
        ``decode(path, window) -> LoadedImage``; default: the sandboxed reader.

    Raises
    ------
    InputError
        The image cannot be decoded (also when its decoder crashes or hangs).
    """
    key = (str(path), laterality, str(window))
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    loaded = (decode or _decode)(path, window)
    pixels = np.ascontiguousarray(loaded.pixels, dtype=np.float32)
    if laterality in ("L", "R"):
        from mammolens.data.preprocess import chest_wall_on_left  # the rule preprocessing flips by

        left = chest_wall_on_left(pixels)
        mirror = left if laterality == "R" else not left
    else:
        mirror = False
    d = Display(pixels, bool(mirror), str((loaded.meta or {}).get("voi_applied", "")))
    if cache is not None:
        cache.put(key, d)
    return d


def _window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """The user's window over display values (DICOM LINEAR_EXACT, PS3.3 C.11.2.1.3.2):
    centre 0.5 and width 1 leave the model's intensities as they are."""
    width = max(float(width), 1e-6)
    return np.clip((x - (float(center) - width / 2.0)) / width, 0.0, 1.0)


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
    h, wd = _target_size(*d.pixels.shape, max_h)
    small = _resize(d.pixels, (h, wd))
    img = (_window(small, c, w) * 255.0 + 0.5).astype(np.uint8)
    if hanging and d.mirror:
        img = img[:, ::-1]
    return _png(np.ascontiguousarray(img), "L")


def breast_mask(pixels: np.ndarray) -> np.ndarray:
    """Soft [0, 1] mask of the breast (tissue brighter than the air background), so the
    overlay does not colour the background, where the model's map means nothing."""
    import cv2

    lo, hi = float(pixels.min()), float(pixels.max())
    rel = (pixels - lo) / max(hi - lo, 1e-6)
    mask = (rel > 0.04).astype(np.float32)
    k = max(3, (min(pixels.shape) // 64) | 1)
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

    h, w = _target_size(*d.pixels.shape, max_h)
    hm = _resize(np.asarray(heat, dtype=np.float32), (h, w))
    hm = np.clip(hm, 0.0, 1.0)
    lo, hi = float(hm.min()), float(hm.max())
    # contrast-stretched to the map's own range: the strongest evidence is bright and
    # opaque, the weakest transparent (the absolute scores are shown as numbers)
    norm = (hm - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(hm)
    rgb = heat_colormap(norm)
    alpha = np.clip((norm - floor) / (1.0 - floor), 0.0, 1.0) ** 0.8 * 255.0
    alpha *= breast_mask(_resize(d.pixels, (h, w)))
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
