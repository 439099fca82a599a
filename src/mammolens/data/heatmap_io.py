"""Heatmap files: what ``predict`` writes and ``evaluate``/``serve`` read.

One ``.npz`` per image with float32 arrays in cache geometry (the model's input size),
values in [0, 1], each named by kind (``attention``, ``localization``, ``gradcam``), and
``transform``: the JSON of the :class:`~mammolens.data.transform.Transform` that maps
them back onto the original image.
"""

from __future__ import annotations

from pathlib import Path

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
