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
    np.savez_compressed(path, transform=np.array(transform.to_json()), **arrays)
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
