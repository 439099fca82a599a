"""Interpretability: attention, localisation and Grad-CAM heatmaps, and PNG overlays."""

from mammolens.explain.heatmaps import (
    attention_maps,
    compute_heatmaps,
    gradcam_maps,
    localization_maps,
    overlay_png,
    overlay_rgb,
    upsample,
)

__all__ = [
    "attention_maps",
    "compute_heatmaps",
    "gradcam_maps",
    "localization_maps",
    "overlay_png",
    "overlay_rgb",
    "upsample",
]
