"""Heatmap files: what ``predict`` writes and ``evaluate``/``serve`` read.

One ``.npz`` per image with float32 arrays in cache geometry (the model's input size),
values in [0, 1], each named by kind (``attention``, ``localization``, ``gradcam``), and
``transform``: the JSON of the :class:`~mammolens.data.transform.Transform` that maps
them back onto the original image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mammolens.data.transform import Transform

HEATMAP_KINDS = ("attention", "localization", "gradcam")


def save_heatmaps(path: str | Path, maps: dict[str, np.ndarray], transform: Transform) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in maps.items()}
    for k, v in arrays.items():
        if v.shape != (transform.out_h, transform.out_w):
            raise ValueError(f"heatmap {k!r} has shape {v.shape}, expected {(transform.out_h, transform.out_w)}")
    # uncompressed: float maps barely compress (5.7 of 6.8 MB at 1024x832) and deflate cost
    # ~230 ms of CPU per image, on the same cores as the model during predict
    np.savez(path, transform=np.array(transform.to_json()), **arrays)
    return path


def load_heatmap(
    path: str | Path, kind: str = "localization", *, geometry: str = "original"
) -> tuple[np.ndarray, Transform]:
    """Load one heatmap; ``geometry="original"`` maps it back onto the original image."""
    with np.load(path, allow_pickle=False) as z:
        if kind not in z.files:
            have = [f for f in z.files if f != "transform"]
            raise KeyError(f"{path}: no {kind!r} heatmap (has {have})")
        arr = z[kind].astype(np.float32)
        tf = Transform.from_json(str(z["transform"]))
    if geometry == "cache":
        return arr, tf
    if geometry != "original":
        raise ValueError("geometry must be 'original' or 'cache'")
    return tf.inverse_array(arr), tf


def heatmap_kinds(path: str | Path) -> list[str]:
    with np.load(path, allow_pickle=False) as z:
        return [f for f in z.files if f != "transform"]


#: the kind used when none is asked for: the first of these the file holds
KIND_PREFERENCE = ("localization", "attention", "gradcam")


def choose_kind(path: str | Path, kind: str | None = None) -> str:
    """``kind`` when the file holds it, else (``kind=None``) the preferred kind it holds.

    Raises
    ------
    KeyError
        The file has no such map (or none at all).
    """
    kinds = heatmap_kinds(path)
    if kind is None:
        kind = next((k for k in KIND_PREFERENCE if k in kinds), kinds[0] if kinds else None)
    if kind is None or kind not in kinds:
        raise KeyError(f"{path}: heatmap file has no {kind!r} map (has {kinds})")
    return kind


def heatmap_and_lesion_mask(
    path: str | Path, lesions: Any, *, kind: str | None = None, base_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """One image's heatmap and malignant-lesion mask, both in ORIGINAL image geometry.

    What localisation is scored on (``mammolens stats localization`` and ``evaluate``):
    the heatmap mapped back with its transform, the lesions (manifest JSON, original pixel
    coordinates) rasterised on the same grid.

    Returns
    -------
    heatmap, mask, kind
        ``mask`` is boolean, or ``None`` when the image has no malignant lesion.

    Raises
    ------
    KeyError
        No such heatmap kind in the file.
    ValueError
        The lesions cannot be parsed, or malignant lesions rasterise to an empty mask.
    """
    from mammolens.data.lesions import MASK_MALIGNANT, parse_lesions, rasterize_lesions

    kind = choose_kind(path, kind)
    hm, _ = load_heatmap(path, kind, geometry="original")
    les = [le for le in parse_lesions(lesions) if le.pathology == "malignant"]
    if not les:
        return hm, None, kind
    mask = rasterize_lesions(les, hm.shape, base_dir=base_dir) == MASK_MALIGNANT
    if not mask.any():
        raise ValueError("lesions rasterise to an empty mask")
    return hm, mask, kind


#: the service's name for :data:`KIND_PREFERENCE`
PREFERRED_KINDS = KIND_PREFERENCE


def heatmap_original(path: str | Path, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A heatmap of a ``.npz`` (``kind``, default the preferred one) on the original image,
    clipped to [0, 1], and its kind. What the service and ``predict --dicom-out`` export."""
    try:
        kind = choose_kind(path, kind)
    except KeyError as e:
        raise ValueError(str(e).strip("'\"")) from None
    arr, _ = load_heatmap(path, kind, geometry="original")
    from mammolens.explain.colormap import to_unit

    return to_unit(arr), kind


def heatmap_regions(path: str | Path, k: int = 3, kind: str | None = None) -> list[dict[str, float]]:
    """The ``k`` highest-scoring regions of a heatmap file, in original pixel coordinates.

    Found on the map in cache geometry and mapped back through the file's transform, as
    ``predict`` does for ``PREDICTIONS_regions.csv`` (:func:`top_regions`); ``kind``
    defaults to the preferred kind the file holds (what the viewer shows).
    """
    try:
        kind = choose_kind(path, kind)
    except KeyError as e:
        raise ValueError(str(e).strip("'\"")) from None
    arr, tf = load_heatmap(path, kind, geometry="cache")
    return top_regions(arr, k, transform=tf)


def heatmap_peak(arr: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` of the heatmap maximum (pixel centre, the array's coordinates)."""
    i, j = np.unravel_index(int(np.argmax(arr)), arr.shape)
    return float(j) + 0.5, float(i) + 0.5


def top_regions(
    heat: np.ndarray,
    k: int = 3,
    *,
    transform: Transform | None = None,
    rel_threshold: float = 0.5,
    min_score: float = 1e-3,
) -> list[dict[str, float]]:
    """The ``k`` highest-scoring regions of a heatmap, best first.

    Greedy peak picking with suppression (as GMIC's top-K patches; Shen et al., Med Image
    Anal 2021): take the map's maximum, grow the region of pixels connected to it whose
    value is at least ``rel_threshold`` times the peak, record its bounding box, remove it
    and repeat. A region's ``score`` is its peak value (for the localisation map, the
    malignancy probability there); regions below ``min_score`` are not reported.

    Parameters
    ----------
    heat
        ``(H, W)`` map in [0, 1] (cache geometry when ``transform`` is given).
    transform
        Maps the boxes from cache to original pixel coordinates (un-pad, un-scale,
        un-flip, un-crop), so they can be drawn on the mammogram as stored.

    Returns
    -------
    list of dict
        ``rank`` (1 = best), ``score``, ``x0, y0, x1, y1`` (continuous pixel
        coordinates, origin at the top-left corner, ``x`` the column; ``x1``/``y1``
        exclusive) and ``peak_x, peak_y``.
    """
    import cv2

    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    from mammolens.explain.colormap import to_unit

    work = to_unit(heat)  # a new array: zeroed region by region below
    if work.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {work.shape}")
    out: list[dict[str, float]] = []
    while len(out) < k:
        i, j = np.unravel_index(int(np.argmax(work)), work.shape)
        peak = float(work[i, j])
        if peak < min_score:
            break
        mask = (work >= rel_threshold * peak).astype(np.uint8)
        _n, labels, stats, _c = cv2.connectedComponentsWithStats(mask, connectivity=8)
        lab = labels[i, j]
        x, y, bw, bh = (int(v) for v in stats[lab, :4])
        box = np.array([[x, y], [x + bw, y + bh]], dtype=float)
        pk = np.array([[j + 0.5, i + 0.5]], dtype=float)
        if transform is not None:
            box = transform.inverse_points(box)
            pk = transform.inverse_points(pk)
            w, h = transform.orig_w, transform.orig_h
        else:
            h, w = work.shape
        x0, x1 = sorted((float(np.clip(box[0, 0], 0, w)), float(np.clip(box[1, 0], 0, w))))
        y0, y1 = sorted((float(np.clip(box[0, 1], 0, h)), float(np.clip(box[1, 1], 0, h))))
        out.append({"rank": len(out) + 1, "score": round(peak, 6), "x0": round(x0, 2), "y0": round(y0, 2),
                    "x1": round(x1, 2), "y1": round(y1, 2),
                    "peak_x": round(float(np.clip(pk[0, 0], 0, w)), 2), "peak_y": round(float(np.clip(pk[0, 1], 0, h)), 2)})
        sub = work[y : y + bh, x : x + bw]  # the region lies inside its box
        sub[labels[y : y + bh, x : x + bw] == lab] = 0.0
    return out
