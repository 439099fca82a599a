"""The one colour map of every heatmap mammolens draws.

Explain overlays (``predict --heatmaps``), the DICOM secondary captures, the service's
viewer layer and the report's gallery thumbnails all colour a heatmap with
:func:`heat_colormap`: matplotlib's *inferno* (van der Walt & Smith 2015), sampled at
five stops and interpolated linearly. It is perceptually uniform and ordered from dark to
bright, so "hotter" reads the same in colour and in grey, unlike *jet*, whose bands
invent edges (Borland & Taylor 2007). Import-light (NumPy only): the service and the
DICOM writer use it without matplotlib or torch.
"""

from __future__ import annotations

import numpy as np

#: the colour map's name (for matplotlib figures that draw a colour bar beside a map)
HEATMAP_COLORMAP = "inferno"

_STOPS = np.array(
    [[0.0, 0, 0, 4], [0.25, 87, 16, 110], [0.5, 188, 55, 84], [0.75, 249, 142, 9], [1.0, 252, 255, 164]],
    dtype=np.float32,
)


#: steps of the lookup table :func:`heat_colormap` reads (values are rounded to 1/4095:
#: at most 0.03 of a colour level from interpolating the stops exactly)
_LUT_STEPS = 4096


def _lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, _LUT_STEPS)
    return np.stack([np.interp(x, _STOPS[:, 0], _STOPS[:, ch + 1]) for ch in range(3)], axis=1).astype(np.float32)


_LUT = _lut()
_LUT_U8 = np.rint(_LUT).astype(np.uint8)


def to_unit(v: np.ndarray) -> np.ndarray:
    """``v`` as float32 in [0, 1]: NaN -> 0, clipped (how every map is drawn)."""
    return np.clip(np.nan_to_num(np.asarray(v, dtype=np.float32), nan=0.0), 0.0, 1.0)


def _lut_index(v: np.ndarray, *, unit: bool = False) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32) if unit else to_unit(v)
    return (v * np.float32(_LUT_STEPS - 1) + np.float32(0.5)).astype(np.intp)


def heat_colormap(v: np.ndarray) -> np.ndarray:
    """``(H, W)`` values in [0, 1] -> ``(H, W, 3)`` float32 RGB in [0, 255] (*inferno*).

    One table lookup (about 4x faster than interpolating every pixel; ``predict`` colours
    a full overlay per image on the cores the model uses).
    """
    return _LUT[_lut_index(v)]


def heat_colormap_u8(v: np.ndarray, *, unit: bool = False) -> np.ndarray:
    """:func:`heat_colormap` rounded to ``uint8`` (what is drawn); ``unit=True``: ``v`` is
    already :func:`to_unit`'s output (a caller that sanitised the map once)."""
    return _LUT_U8[_lut_index(v, unit=unit)]


def blend_heatmap(grey01: np.ndarray, heat01: np.ndarray, *, opacity: float = 0.45) -> np.ndarray:
    """RGB uint8: the grey image with the heatmap blended in colour where the map is high.

    The map is scaled to its own maximum (the strongest evidence is brightest; the scores
    are reported as numbers) and only the breast is coloured (``grey > 0.02``), not the
    air around it.
    """
    grey01 = np.clip(np.asarray(grey01, dtype=np.float32), 0.0, 1.0)
    heat01 = to_unit(heat01)
    if grey01.shape != heat01.shape:
        raise ValueError(f"image {grey01.shape} and heatmap {heat01.shape} differ in shape")
    peak = float(heat01.max()) if heat01.size else 0.0
    norm = heat01 / peak if peak > 0 else heat01
    alpha = opacity * np.clip((norm - 0.05) / 0.95, 0.0, 1.0)
    alpha = (alpha * (grey01 > 0.02))[..., None]
    rgb = heat_colormap(norm) / 255.0
    grey = np.repeat(grey01[..., None], 3, axis=2)
    return (np.clip((1 - alpha) * grey + alpha * rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
