"""Interpretability: attention, localisation and Grad-CAM heatmaps, and PNG overlays.

The heatmap functions need torch; they are imported on first use, so the import-light
:mod:`mammolens.explain.colormap` (the one colour map) loads without it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "attention_maps",
    "compute_heatmaps",
    "gradcam_maps",
    "localization_maps",
    "overlay_png",
    "overlay_rgb",
    "upsample",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mammolens.explain import heatmaps

        return getattr(heatmaps, name)
    raise AttributeError(f"module 'mammolens.explain' has no attribute {name!r}")
