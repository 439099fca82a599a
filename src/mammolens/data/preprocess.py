"""Preprocessing: decode, crop to the breast, flip, resize, pad -- and the on-disk cache.

One image (:func:`preprocess_image`) goes through these steps:

1. **decode** with :func:`mammolens.io.read_image` (display-ready float32 in [0, 1]), or
   take an already-decoded array;
2. **segment the breast** on a downsampled copy (a strided copy shrunk with
   ``cv2.INTER_AREA`` to about ``seg_size`` pixels on its long side): a global threshold
   (triangle [Zack1977]_ by default, Otsu [Otsu1979]_ on request), a morphological
   opening that cuts thin bridges to film edges and markers, the largest connected
   component (the breast; burned-in labels, markers and film-edge strips are separate
   components and are dropped), holes filled, a little of the thresholded skin line
   recovered. The pectoral muscle on MLO views is part of the breast component and is
   kept. Pixels outside the (dilated) breast mask -- labels inside the bounding box --
   are set to the background value;
3. **chest-wall side** from the pixels: the intensity mass of the breast in the half of
   its bounding box next to the chest wall is larger (the breast is widest there and the
   pectoral muscle lies there). Laterality from the manifest is the cross-check: the
   standard display puts the chest wall of a left breast on the left of the image and of
   a right breast on the right; a disagreement is flagged (``laterality_mismatch``): the
   pixels win when their evidence is strong (asymmetry >= ``WEAK_ASYMMETRY``), the
   laterality otherwise;
4. **crop** the original-resolution image to the breast's bounding box plus a margin,
   **flip** so every chest wall lies on the same side (``flip_to``), **resize** keeping the
   aspect ratio (``cv2.INTER_AREA``) and **pad** to the target size. The geometry is
   recorded as a :class:`mammolens.data.transform.Transform`;
5. **rasterise lesions** (:func:`mammolens.data.lesions.rasterize_lesions`) with that
   transform, so the mask is in the same geometry as the image.

A manifest (:func:`preprocess_manifest`) is processed in parallel (a process pool with
``imap_unordered``; workers write their own arrays and return only a small record, so
memory does not grow with the dataset), resumably (an image whose input file and
settings are unchanged and whose array is on disk is skipped) into a cache folder::

    CACHE/settings.json              PreprocessSettings (+ key, version)
    CACHE/index.csv                  one row per image (see INDEX_COLUMNS)
    CACHE/qc.csv                     every rejected / flagged input, with the reason
    CACHE/arrays/<hh>/<image>.npy    the image (uint16 or float16, (H, W))
    CACHE/arrays/<hh>/<image>.mask.npy   the lesion mask (uint8 0/1/2), when there are lesions

``index.csv`` is appended to one complete line at a time while the run goes on (a line
cut by a kill is dropped when the file is next opened) and rewritten atomically at the
end, so it is never corrupt. Read the cache with :func:`mammolens.data.cache.open_cache`.

References
----------
.. [Zack1977] Zack G.W., Rogers W.E., Latt S.A. Automatic measurement of sister chromatid
   exchange frequency. J Histochem Cytochem 25(7):741-753, 1977 (triangle threshold).
.. [Otsu1979] Otsu N. A threshold selection method from gray-level histograms. IEEE Trans
   Syst Man Cybern 9(1):62-66, 1979.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# the cache's on-disk format is data.cache's, the settings data.preprocess_settings'; the
# names imported "as" themselves moved from here and stay importable from here
from mammolens.data.cache import ARRAYS_DIR as ARRAYS_DIR
from mammolens.data.cache import INDEX_COLUMNS as INDEX_COLUMNS
from mammolens.data.cache import (
    INDEX_FILE,
    QC_FILE,
    SETTINGS_FILE,
    array_relpath,
    encode_image,
    input_fingerprint,
    mask_relpath,
    read_index_rows,
    write_index,
)
from mammolens.data.cache import CacheLock as _CacheLock
from mammolens.data.cache import IndexWriter as _IndexWriter
from mammolens.data.cache import decode_image as decode_image
from mammolens.data.cache import is_fresh as _is_fresh
from mammolens.data.cache import safe_name as safe_name
from mammolens.data.cache import save_npy_atomic as _save_npy_atomic
from mammolens.data.cache import write_text_atomic as _write_text_atomic
from mammolens.data.lesions import Lesion, parse_lesions, rasterize_lesions, rebase_mask_paths
from mammolens.data.preprocess_settings import PREPROCESS_VERSION, PreprocessSettings
from mammolens.data.preprocess_settings import parse_size as parse_size
from mammolens.data.transform import Transform
from mammolens.errors import InputError, MammolensError
from mammolens.io.sandbox import IsolatedPool
from mammolens.qc import QCTable

QC_STAGE = "preprocess"
#: seconds one image may take in a worker before the worker is declared hung
DECODE_TIMEOUT = 300.0


# ----------------------------------------------------------------------------------------
# one image
# ----------------------------------------------------------------------------------------
@dataclass
class Preprocessed:
    """The result of :func:`preprocess_image`.

    ``image`` float32 (H, W) in [0, 1]; ``mask`` uint8 (H, W) with 0 background,
    1 benign/unknown lesion, 2 malignant lesion, or ``None`` when no lesions were given;
    ``transform`` maps original pixel coordinates to cache coordinates; ``flags`` are QC
    flags (the image is usable, but look at it); ``chest_wall`` is the side the chest
    wall was found on in the *original* image; ``timings`` seconds per stage.
    """

    image: np.ndarray
    mask: np.ndarray | None
    transform: Transform
    flags: list[str] = field(default_factory=list)
    chest_wall: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def _read_source(path: Path, settings: PreprocessSettings) -> np.ndarray:
    """Decode an image file with :func:`mammolens.io.read_image` (``voi`` = the window)."""
    from mammolens.io.images import read_image

    return np.asarray(read_image(path, voi=settings.window).pixels)


def _as_float_image(arr: np.ndarray, where: str | Path | None, *, trusted: bool = False) -> np.ndarray:
    """Validate a decoded image and bring it to float32 in [0, 1] (no copy when already).

    ``trusted``: float32 pixels from :func:`mammolens.io.read_image`, which guarantees finite
    values in [0, 1]; the full-image range scan is skipped (blank images are caught on the
    segmentation's downsampled copy).
    """
    a = np.asarray(arr)
    if trusted and a.ndim == 2 and a.dtype == np.float32 and min(a.shape) >= 16:
        return a
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., :3].mean(axis=2) if a.shape[2] > 1 else a[..., 0]
    if a.ndim != 2:
        raise InputError(where, f"expected a 2-D grayscale image, got shape {a.shape}")
    if a.shape[0] < 16 or a.shape[1] < 16:
        raise InputError(where, f"image too small ({a.shape[0]}x{a.shape[1]})")
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if hi == lo:
            raise InputError(where, f"blank image: every pixel is {lo}")
        return ((a.astype(np.float32) - lo) * np.float32(1.0 / (hi - lo))).astype(np.float32, copy=False)
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(where, f"unsupported pixel type {a.dtype}")
    a = a.astype(np.float32, copy=False)
    lo, hi = float(a.min()), float(a.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(where, "image contains NaN or infinite values")
    if hi - lo < 1e-6:
        raise InputError(where, f"blank image: every pixel is {lo:g}")
    if lo < 0.0 or hi > 1.0:
        a = np.clip(a, 0.0, 1.0)
    return a


def _downsample(img: np.ndarray, seg_size: int) -> tuple[np.ndarray, float, float]:
    """A small copy for segmentation; returns it and the (row, col) scale factors to original."""
    import cv2

    h, w = img.shape
    step = max(1, int(max(h, w) // (2 * seg_size)))
    src = img[::step, ::step] if step > 1 else img  # cheap stride first, then area-average
    sh, sw = src.shape
    f = max(sh, sw) / seg_size
    if f > 1.0:
        nh, nw = max(1, int(round(sh / f))), max(1, int(round(sw / f)))
        small = cv2.resize(np.ascontiguousarray(src), (nw, nh), interpolation=cv2.INTER_AREA)
    else:
        small = np.ascontiguousarray(src, dtype=np.float32)
    return small, h / small.shape[0], w / small.shape[1]


def _threshold(u8: np.ndarray, method: str | float) -> int:
    import cv2

    if isinstance(method, float):
        return int(round(method * 255))
    flag = cv2.THRESH_TRIANGLE if method == "triangle" else cv2.THRESH_OTSU
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | flag)
    return int(t)


@dataclass
class _Segmentation:
    mask: np.ndarray  # small binary breast mask (uint8 0/1)
    bbox: tuple[int, int, int, int]  # y0, y1, x0, x1 in small coordinates
    fy: float
    fx: float
    fraction: float
    chest_left: bool
    asymmetry: float  # |left - right| / (left + right) of the intensity mass, 0..1


def _largest_component(binary: np.ndarray, fallback: np.ndarray) -> np.ndarray | None:
    import cv2

    src = binary if binary.any() else fallback
    n, labels, stats, _ = cv2.connectedComponentsWithStats(src, connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == best).astype(np.uint8)


def segment_breast(img: np.ndarray, settings: PreprocessSettings, *, where: str | Path | None = None) -> _Segmentation:
    """Find the breast in a display-ready image (on a downsampled copy).

    Returns the small mask, its bounding box, the scale factors back to the original and
    the chest-wall side decided from the pixels. Raises :class:`InputError` when no
    breast is found.
    """
    import cv2

    small, fy, fx = _downsample(img, settings.seg_size)
    sh, sw = small.shape
    lo, hi = float(small.min()), float(small.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(where, "image contains NaN or infinite values")
    if hi - lo < 1e-6:
        raise InputError(where, f"blank image: every pixel is {lo:g}")
    u8 = (np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    u8 = cv2.medianBlur(u8, 3)
    t = _threshold(u8, settings.threshold)
    fg = (u8 > t).astype(np.uint8)
    # opening cuts thin bridges (film edges, markers touching the skin line)
    k = max(3, int(round(min(sh, sw) * 0.02)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    core = _largest_component(cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel), fg)
    if core is None:
        raise InputError(where, "no breast found: nothing above the background threshold")
    comp = core
    if settings.low_threshold > 0 and settings.threshold == "otsu":
        # hysteresis: grow into the fainter skin-line region connected to the core
        t_low = max(1, int(round(settings.low_threshold * t)))
        low = cv2.morphologyEx((u8 > t_low).astype(np.uint8), cv2.MORPH_OPEN, kernel)
        n, labels = cv2.connectedComponents(low, connectivity=8)
        if n > 1:
            hit = np.bincount(labels[core > 0], minlength=n)
            hit[0] = 0
            comp = ((labels == int(np.argmax(hit))) | (core > 0)).astype(np.uint8)
            fg = (u8 > t_low).astype(np.uint8)
    # recover the skin line lost by the opening (only next to the component), fill holes
    comp = cv2.dilate(comp, kernel) & fg | comp
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [max(contours, key=cv2.contourArea)] if contours else []
    mask = np.zeros_like(comp)
    cv2.drawContours(mask, contours, -1, 1, thickness=cv2.FILLED)
    mask |= comp
    fraction = float(mask.mean())
    if fraction < settings.min_breast_fraction:
        raise InputError(
            where,
            f"no breast found: largest bright region covers {fraction:.2%} of the image "
            f"(minimum {settings.min_breast_fraction:.2%})",
        )
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    # chest-wall side: intensity mass of the breast in each half of its bounding box
    col_mass = (small[y0:y1, x0:x1] * mask[y0:y1, x0:x1]).sum(axis=0, dtype=np.float64)
    half = col_mass.size // 2
    left, right = float(col_mass[:half].sum()), float(col_mass[col_mass.size - half :].sum())
    asym = abs(left - right) / max(left + right, 1e-12)
    return _Segmentation(mask, (y0, y1, x0, x1), fy, fx, fraction, left >= right, asym)


def breast_region(image: np.ndarray, *, threshold: float = 0.05) -> np.ndarray:
    """Boolean mask of the breast in a preprocessed image: pixels brighter than
    ``threshold``, largest connected component (8-connectivity).

    For images already cropped, flipped and resized by :func:`preprocess_image` (float32
    in [0, 1], e.g. read back from the cache), where the background is black: a cheap,
    full-resolution mask that tells the training stages which positions lie inside the
    breast (the patch sampler's background patches, SimCLR's patch positions). Finding the
    breast in a raw image (threshold choice, skin line, markers) is
    :func:`segment_breast`'s job.
    """
    m = (np.asarray(image, dtype=np.float32) > threshold).astype(np.uint8)
    comp = _largest_component(m, m)
    return comp.astype(bool) if comp is not None else np.zeros(m.shape, dtype=bool)


def window_sums(a: np.ndarray, p: int, *, full: bool = False) -> np.ndarray:
    """Sum of ``a`` over every ``p x p`` window, indexed by the window's top-left corner
    (integral image, O(HW)).

    ``full=False``: only windows inside the image, shape ``(H - p + 1, W - p + 1)``;
    ``full=True``: a window at every pixel, zero outside the image, shape ``(H, W)``.
    Integer and boolean input is summed in int64 (exact, for thresholds on counts),
    anything else in float64. Where patch samplers may put a patch: the share of a
    window inside the breast (:func:`breast_region`) or a lesion.
    """
    a = np.asarray(a)
    dt = np.int64 if a.dtype.kind in "bui" else np.float64
    h, w = a.shape
    if full:
        pad = np.zeros((h + p, w + p), dtype=dt)
        pad[:h, :w] = a
        a = pad
    ii = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=dt)
    ii[1:, 1:] = a.astype(dt, copy=False).cumsum(0).cumsum(1)
    if full:
        return ii[p : p + h, p : p + w] - ii[:h, p : p + w] - ii[p : p + h, :w] + ii[:h, :w]
    return ii[p:, p:] - ii[:-p, p:] - ii[p:, :-p] + ii[:-p, :-p]


def chest_wall_on_left(img: np.ndarray, settings: PreprocessSettings | None = None) -> bool:
    """Whether the chest wall is on the image's left edge, decided from the pixels.

    The one rule (preprocessing flips by it; the viewer hangs images by it): segment the
    breast (:func:`segment_breast`) and compare its intensity mass in the two halves of its
    bounding box. When no breast is found, the halves of the whole image are compared.
    ``img`` is display-ready (dense tissue bright), values in [0, 1].
    """
    img = np.asarray(img, dtype=np.float32)
    try:
        return segment_breast(img, settings or PreprocessSettings()).chest_left
    except InputError:
        half = img.shape[1] // 2
        return float(img[:, :half].sum(dtype=np.float64)) >= float(img[:, img.shape[1] - half :].sum(dtype=np.float64))


#: below this left/right mass asymmetry the pixel-based chest-wall side is "ambiguous"
AMBIGUOUS_ASYMMETRY = 0.05
#: below this, pixels that disagree with the manifest's laterality give way to it (on the
#: 200 mini-MIAS development films the two wrong pixel decisions had 0.07 and 0.12, the
#: right ones a median of 0.34)
WEAK_ASYMMETRY = 0.15


def _integer_factor(ch: int, cw: int, rh: int, rw: int) -> int:
    """The integer pre-reduction factor used before the final INTER_AREA resize (1 = none)."""
    k = int(min(ch / rh, cw / rw))
    return k if k >= 2 else 1


def _snap(a0: int, a1: int, k: int, n: int) -> tuple[int, int]:
    """Grow ``[a0, a1)`` to a multiple of ``k`` within ``[0, n)``; unchanged when impossible."""
    size = a1 - a0
    want = -(-size // k) * k
    extra = want - size
    if extra == 0:
        return a0, a1
    if a1 + extra <= n:
        return a0, a1 + extra
    if a0 - extra >= 0:
        return a0 - extra, a1
    grow_end = n - a1
    if a0 - (extra - grow_end) >= 0:
        return a0 - (extra - grow_end), n
    return a0, a1  # the whole axis and not a multiple of k: keep it (no integer pass)


def _resize_area(a: np.ndarray, w: int, h: int, k: int) -> np.ndarray:
    """INTER_AREA resize to ``(h, w)``; an exact integer pass by ``k`` first (cv2's fast path).

    Area averaging by an integer factor followed by area averaging by the remaining factor
    (< 2) equals one area resize up to the sub-pixel weights at the block borders.
    """
    import cv2

    if k >= 2 and a.shape[0] % k == 0 and a.shape[1] % k == 0:
        a = cv2.resize(a, (a.shape[1] // k, a.shape[0] // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)


def _breast_mask_in_crop(seg: _Segmentation, cy0: int, cx0: int, ch: int, cw: int, rh: int, rw: int) -> np.ndarray:
    """The (dilated) small breast mask warped into the resized crop's geometry, float32 0/1."""
    import cv2

    sh, sw = seg.mask.shape
    k = max(3, int(round(max(sh, sw) * 0.012)) | 1)
    m = cv2.dilate(seg.mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) * np.uint8(255)
    sx, sy = rw / cw, rh / ch
    # pixel centres: index + 0.5 in continuous coordinates on both sides
    mat = np.array(
        [[seg.fx * sx, 0.0, (0.5 * seg.fx - cx0) * sx - 0.5], [0.0, seg.fy * sy, (0.5 * seg.fy - cy0) * sy - 0.5]],
        dtype=np.float64,
    )
    w = cv2.warpAffine(m, mat, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return (w >= 128).astype(np.float32)


def preprocess_image(
    source: str | Path | np.ndarray,
    settings: PreprocessSettings | None = None,
    *,
    lesions: list[Lesion] | str | list[dict] | None = None,
    laterality: str | None = None,
    base_dir: str | Path | None = None,
) -> Preprocessed:
    """Preprocess one image: segment, crop, flip, resize, pad; rasterise its lesions.

    Parameters
    ----------
    source
        An image file (read with :func:`mammolens.io.read_image`) or an already decoded
        2-D array (float in [0, 1], or integers, rescaled by their min and max).
    settings
        :class:`PreprocessSettings` (defaults when ``None``).
    lesions
        Lesions in original pixel coordinates (:class:`~mammolens.data.lesions.Lesion`
        objects, dicts, or the manifest's JSON string). ``None`` or empty: no mask.
    laterality
        ``"L"``/``"R"`` from the manifest: cross-checked against the pixels.
    base_dir
        Folder that relative lesion mask paths are resolved against.

    Returns
    -------
    Preprocessed

    Raises
    ------
    InputError
        Unreadable, blank or non-finite image, or no breast found.
    """
    import cv2

    settings = settings or PreprocessSettings()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    where: str | Path | None
    if isinstance(source, str | Path):
        where = Path(source)
        if not where.exists():
            raise InputError(where, "file not found")
        raw = _read_source(where, settings)
    else:
        where = None
        raw = source
    img = _as_float_image(raw, where, trusted=where is not None)
    del raw
    t1 = time.perf_counter()
    timings["decode"] = t1 - t0
    h, w = img.shape
    flags: list[str] = []

    lat = (laterality or "").strip().upper()
    expected_left = {"L": True, "R": False}.get(lat)
    if settings.crop or settings.flip_to != "none":
        seg = segment_breast(img, settings, where=where)
        chest_left = seg.chest_left
        if seg.asymmetry < AMBIGUOUS_ASYMMETRY:
            flags.append("chest_wall_ambiguous")
            if expected_left is not None:
                chest_left = expected_left
        elif expected_left is not None and expected_left != chest_left:
            seen = "left" if chest_left else "right"
            if seg.asymmetry < WEAK_ASYMMETRY:
                chest_left = expected_left
                flags.append(f"laterality_mismatch: manifest says {lat}, the pixels weakly suggest the chest wall on the {seen}; laterality used")
            else:
                flags.append(f"laterality_mismatch: manifest says {lat} but the chest wall is on the {seen}; pixels used")
        if seg.fraction > 0.97:
            flags.append("no_background: the breast fills the whole image")
    else:
        seg = None
        chest_left = True if expected_left is None else expected_left
    chest = "left" if chest_left else "right"

    if settings.crop and seg is not None:
        y0, y1, x0, x1 = seg.bbox
        m = int(round(settings.margin * max(h, w)))
        cy0 = max(0, int(np.floor(y0 * seg.fy)) - m)
        cy1 = min(h, int(np.ceil(y1 * seg.fy)) + m)
        cx0 = max(0, int(np.floor(x0 * seg.fx)) - m)
        cx1 = min(w, int(np.ceil(x1 * seg.fx)) + m)
    else:
        cy0, cy1, cx0, cx1 = 0, h, 0, w
    flip = settings.flip_to != "none" and (chest != settings.flip_to)
    H, W = settings.size
    ch, cw = cy1 - cy0, cx1 - cx0
    scale = min(H / ch, W / cw)
    k = _integer_factor(ch, cw, max(1, round(ch * scale)), max(1, round(cw * scale)))
    if k > 1:  # make the crop a multiple of k so the fast integer pass is exact
        cy0, cy1 = _snap(cy0, cy1, k, h)
        cx0, cx1 = _snap(cx0, cx1, k, w)
        ch, cw = cy1 - cy0, cx1 - cx0
        scale = min(H / ch, W / cw)
    t2 = time.perf_counter()
    timings["crop"] = t2 - t1

    rh, rw = min(H, max(1, int(round(ch * scale)))), min(W, max(1, int(round(cw * scale))))
    pad_top = (H - rh) // 2
    pad_left = W - rw if settings.flip_to == "right" else 0
    tf = Transform(h, w, cy0, cy1, cx0, cx1, flip, float(scale), H, W, pad_top, pad_left)
    rh, rw = tf.resized_h, tf.resized_w
    crop = img[cy0:cy1, cx0:cx1]
    if (rh, rw) == crop.shape:
        small = np.array(crop, dtype=np.float32)
    elif rh < ch and rw < cw:
        small = _resize_area(crop, rw, rh, k)
    else:
        small = cv2.resize(np.ascontiguousarray(crop), (rw, rh), interpolation=cv2.INTER_LINEAR)
    if settings.mask_background and seg is not None:
        small *= _breast_mask_in_crop(seg, cy0, cx0, ch, cw, rh, rw)
        if settings.pad_value:
            small[small == 0] = settings.pad_value
    if flip:
        small = small[:, ::-1]
    out = np.full((H, W), settings.pad_value, dtype=np.float32)
    out[pad_top : pad_top + rh, pad_left : pad_left + rw] = small
    np.clip(out, 0.0, 1.0, out=out)
    t3 = time.perf_counter()
    timings["resize"] = t3 - t2

    mask = None
    les = lesions
    try:
        if isinstance(les, str) or (isinstance(les, list) and les and isinstance(les[0], dict)):
            les = parse_lesions(les)
        if les:
            mask = rasterize_lesions(list(les), (H, W), transform=tf, base_dir=base_dir)
    except Exception as e:  # noqa: BLE001 - a bad annotation never loses the image
        reason = e.reason if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
        flags.append(f"lesions_unreadable: {reason}")
        mask = None
    timings["mask"] = time.perf_counter() - t3
    return Preprocessed(out, mask, tf, flags, chest, timings)


# ----------------------------------------------------------------------------------------
# the manifest
# ----------------------------------------------------------------------------------------
@dataclass
class PreprocessResult:
    """What :func:`preprocess_manifest` did. ``cache`` is the opened cache."""

    cache: Any  # mammolens.data.cache.Cache
    qc: QCTable
    cache_dir: Path
    qc_path: Path
    processed: int = 0
    skipped: int = 0
    rejected: int = 0
    flagged: int = 0
    total: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: peak resident memory of the largest process that did the work (MB)
    peak_rss_mb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cache": str(self.cache_dir),
            "qc": str(self.qc_path),
            "settings_key": self.cache.settings.key(),
            "settings": self.cache.settings.model_dump(mode="json"),
            "total": self.total,
            "processed": self.processed,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "flagged": self.flagged,
            "ok": self.total - self.rejected,
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "rejected_reasons": dict(self.qc.reasons("reject")),
        }


def _task_iter(
    manifest: Any, todo: list[int], cache_dir: Path, settings_json: str, base_dir: str
) -> Iterator[dict[str, Any]]:
    from pandas import NA as pd_na

    cols = manifest.columns

    def text(v: Any) -> str:
        if v is None or v is pd_na or (isinstance(v, float) and np.isnan(v)):
            return ""
        return str(v)

    def col(name: str) -> list[str]:
        return [text(v) for v in manifest[name]] if name in cols else [""] * len(manifest)

    ids, paths, lesions, lats = col("image_id"), col("path"), col("lesions"), col("laterality")
    for i in todo:
        path = paths[i]
        yield {
            "image_id": ids[i],
            "path": path,
            "lesions": lesions[i],
            "laterality": lats[i],
            "base_dir": base_dir,
            "image_dir": str(Path(path).parent) if path else "",
            "cache_dir": str(cache_dir),
            "settings": settings_json,
        }


_SETTINGS_CACHE: dict[str, PreprocessSettings] = {}


def _worker_init() -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001 - best effort
        pass


def _process_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run in a worker: preprocess one manifest row, write its arrays, return its index row."""
    t0 = time.perf_counter()
    sj = task["settings"]
    settings = _SETTINGS_CACHE.get(sj)
    if settings is None:
        settings = _SETTINGS_CACHE[sj] = PreprocessSettings.model_validate_json(sj)
    image_id, path = task["image_id"], task["path"]
    row: dict[str, Any] = {
        "image_id": image_id,
        "path": path,
        "fingerprint": input_fingerprint(path) if path else "missing",
        "key": settings.key(),
        "file": "",
        "mask_file": "",
        "height": "",
        "width": "",
        "has_mask": 0,
        "transform": "",
        "flags": "",
        "reason": "",
        "status": "rejected",
    }
    timings: dict[str, float] = {}
    try:
        if not path:
            raise InputError(None, "empty path in the manifest")
        lesions = rebase_mask_paths(task["lesions"], folders=[task["base_dir"], task["image_dir"]], must_exist=True)
        res = preprocess_image(
            Path(path),
            settings,
            lesions=lesions or None,
            laterality=task["laterality"],
            base_dir=task["base_dir"] or None,
        )
        timings = dict(res.timings)
        t_w = time.perf_counter()
        cache_dir = Path(task["cache_dir"])
        rel = array_relpath(image_id)
        _save_npy_atomic(cache_dir / rel, encode_image(res.image, settings.dtype))
        row["file"] = rel
        if res.mask is not None:
            mrel = mask_relpath(image_id)
            _save_npy_atomic(cache_dir / mrel, res.mask)
            row["mask_file"] = mrel
            row["has_mask"] = 1
        timings["write"] = time.perf_counter() - t_w
        row.update(status="ok", height=settings.size[0], width=settings.size[1], transform=res.transform.to_json(), flags=";".join(f.replace(";", ",") for f in res.flags))
    except InputError as e:
        row["reason"] = e.reason
    except MemoryError:
        row["reason"] = "out of memory while decoding (image too large?)"
    except Exception as e:  # noqa: BLE001 - a bad file never stops the run
        row["reason"] = f"cannot preprocess: {type(e).__name__}: {e}"
    row["seconds"] = f"{time.perf_counter() - t0:.4f}"
    row["_timings"] = timings
    row["_rss_mb"] = peak_rss_mb()
    return row


def _row_from(task: dict[str, Any], result: Any, key: str) -> dict[str, Any]:
    """The index row of a pool result: the worker's row, or a rejection when the worker
    died on the image (the sandbox's :class:`InputError`)."""
    if not isinstance(result, InputError):
        return result
    path = task["path"]
    try:
        fingerprint = input_fingerprint(path) if path else "missing"
    except OSError:
        fingerprint = "missing"
    return {
        "image_id": task["image_id"], "path": path, "fingerprint": fingerprint, "key": key,
        "file": "", "mask_file": "", "height": "", "width": "", "has_mask": 0, "transform": "",
        "flags": "", "reason": result.reason, "status": "rejected", "seconds": "",
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (0 where the platform cannot tell).

    Linux: ``VmHWM`` of ``/proc/self/status`` (``getrusage``'s ``ru_maxrss`` survives
    ``fork``/``exec``, so a fresh child would report its parent's peak); elsewhere
    ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):  # pragma: no cover - non-Unix
        return 0.0
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024


def preprocess_manifest(
    manifest: Any,
    cache_dir: str | Path,
    settings: PreprocessSettings | None = None,
    *,
    workers: int = 1,
    progress: bool | Callable[[int, int], None] = True,
    chunksize: int | None = None,
    mp_context: str | None = None,
    base_dir: str | Path | None = None,
    isolate: bool = True,
    timeout: float | None = DECODE_TIMEOUT,
) -> PreprocessResult:
    """Preprocess every image of a manifest into a cache folder (parallel, resumable).

    Parameters
    ----------
    manifest
        A manifest DataFrame or the path of a manifest file (CSV / Parquet).
    cache_dir
        The cache folder (created). An existing cache with other settings is updated:
        its images are reprocessed with the new settings.
    settings
        :class:`PreprocessSettings` (defaults when ``None``).
    workers
        Worker processes. Images are decoded and preprocessed in a supervised pool
        (:class:`mammolens.io.sandbox.IsolatedPool`), ``workers=1`` included: a file that
        crashes its decoder (abort, segfault, Rust panic) or hangs past ``timeout`` is
        recorded as a QC rejection with the reason, the dead worker is replaced and every
        other image is still processed.
    progress
        ``True``: a rich progress bar on stderr; a callable: called as
        ``progress(done, total)`` after each image; ``False``: silent.
    chunksize
        Ignored (kept for compatibility): each worker takes one image at a time, so that a
        crash or a hang is charged to the right file.
    base_dir
        Folder that relative lesion ``mask`` paths are resolved against (default: the
        manifest file's folder when ``manifest`` is a path, else the current folder; the
        image's folder is tried next).
    mp_context
        Multiprocessing start method (default ``"forkserver"`` where available, else
        ``"spawn"``; ``"fork"`` can deadlock once OpenCV's thread pool has started).
    isolate
        ``False`` with ``workers=1``: run in this process (for trusted, self-made files
        only: a decoder crash then ends the process).
    timeout
        Seconds one image may take before its worker is declared hung and replaced
        (``None``: no limit).

    Returns
    -------
    PreprocessResult
        The opened cache, the QC table (written to ``CACHE/qc.csv``) and counts.
    """
    import pandas as pd

    from mammolens.data.cache import open_cache
    from mammolens.data.manifest import read_manifest

    t_start = time.perf_counter()
    settings = settings or PreprocessSettings()
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if isinstance(manifest, str | Path):
        if base_dir is None:
            base_dir = Path(manifest).resolve().parent
        manifest = read_manifest(manifest)
    base = str(Path(base_dir).resolve()) if base_dir is not None else str(Path.cwd())
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError("manifest must be a DataFrame or a manifest file path")
    for c in ("image_id", "path"):
        if c not in manifest.columns:
            raise MammolensError(f"manifest lacks the {c!r} column")
    manifest = manifest.reset_index(drop=True)
    ids = manifest["image_id"].astype(str)
    if ids.duplicated().any():
        raise MammolensError(f"manifest has duplicate image_id(s): {sorted(set(ids[ids.duplicated()]))[:5]}")

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_path = cache_dir / INDEX_FILE
    key = settings.key()
    lock = _CacheLock(cache_dir)  # one writer per cache folder
    try:
        existing = {r["image_id"]: r for r in read_index_rows(index_path)}
        _write_text_atomic(
            cache_dir / SETTINGS_FILE,
            json.dumps(
                {"mammolens_cache": PREPROCESS_VERSION, "key": key, "settings": settings.model_dump(mode="json")},
                indent=2,
            )
            + "\n",
        )
        writer = _IndexWriter(index_path)
    except BaseException:
        lock.release()
        raise
    settings_json = settings.model_dump_json()

    todo: list[int] = []
    for i, (iid, p) in enumerate(zip(ids, manifest["path"].astype(str), strict=True)):
        fp = input_fingerprint(p) if p else "missing"
        if not _is_fresh(existing.get(iid), fp, key, cache_dir):
            todo.append(i)
    total = len(manifest)
    skipped = total - len(todo)
    done = skipped
    stage_seconds: dict[str, float] = {}
    worker_rss = 0.0

    bar = None
    callback: Callable[[int, int], None] | None = None
    if progress is True:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("preprocess"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        task_id = bar.add_task("preprocess", total=total, completed=done)

        def callback(d: int, t: int) -> None:
            bar.update(task_id, completed=d)
    elif callable(progress):
        callback = progress

    tasks = _task_iter(manifest, todo, cache_dir, settings_json, base)
    pool = None
    try:
        if bar is not None:
            bar.start()
        if callback:
            callback(done, total)
        if not todo:
            results: Iterator[dict[str, Any]] = iter(())
        elif workers == 1 and not isolate:
            results = (_process_task(t) for t in tasks)
        else:
            # decoding untrusted pixels can kill a process: a supervised pool, one image
            # per worker at a time; never plain fork (inherited OpenCV/BLAS locks deadlock)
            n = min(workers, len(todo))
            pool = IsolatedPool(n, _process_task, timeout=timeout, mp_context=mp_context,
                                initializer=_worker_init if n > 1 else None)
            results = (_row_from(task, res, key) for task, res in pool.map_unordered(tasks))
        for row in results:
            worker_rss = max(worker_rss, float(row.pop("_rss_mb", 0.0)))
            for k, v in row.pop("_timings", {}).items():
                stage_seconds[k] = stage_seconds.get(k, 0.0) + v
            writer.write(row)
            existing[row["image_id"]] = row
            done += 1
            if callback:
                callback(done, total)
        if pool is not None:
            pool.close()
            pool = None
    finally:
        if pool is not None:
            pool.close(kill=True)
        writer.close()
        if bar is not None:
            bar.stop()
        # compact: one row per image, stale rows (other settings) dropped, manifest order first
        order = {iid: i for i, iid in enumerate(ids)}
        keep = [r for r in existing.values() if r.get("key") == key]
        keep.sort(key=lambda r: (order.get(r["image_id"], len(order)), r["image_id"]))
        write_index(index_path, keep)
        qc = _qc_from_rows([r for r in keep if r["image_id"] in order])
        qc.write_csv(cache_dir / QC_FILE)
        lock.release()

    cache = open_cache(cache_dir)
    rejected = len({r.image_id for r in qc.rejected})
    flagged = len({r.image_id for r in qc.flagged})
    return PreprocessResult(
        cache=cache,
        qc=qc,
        cache_dir=cache_dir,
        qc_path=cache_dir / QC_FILE,
        processed=len(todo),
        skipped=skipped,
        rejected=rejected,
        flagged=flagged,
        total=total,
        seconds=time.perf_counter() - t_start,
        stage_seconds=stage_seconds,
        peak_rss_mb=max(worker_rss, peak_rss_mb()),
    )


def _qc_from_rows(rows: list[dict[str, Any]]) -> QCTable:
    qc = QCTable()
    for r in rows:
        if r.get("status") == "rejected":
            qc.add(QC_STAGE, r.get("path", ""), r.get("reason", "") or "rejected", image_id=r["image_id"])
        elif r.get("flags"):
            for f in str(r["flags"]).split(";"):
                if f:
                    qc.add(QC_STAGE, r.get("path", ""), f, severity="flag", image_id=r["image_id"])
    return qc
