"""Overlay thumbnails for reports: the heatmap over the mammogram as stored (original
geometry and orientation), in the house colour map, with annotated lesions outlined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: outline colour of annotated malignant lesions (green: not in the colour map)
LESION_RGB = (0, 255, 0)


def overlay_thumbnail(
    image_path: str | Path | None,
    heatmap_path: str | Path,
    *,
    kind: str | None = None,
    lesions: Any = "",
    base_dir: str | Path | None = None,
    size: int = 240,
) -> Any:
    """A PIL RGB thumbnail (long side ``size``) of one image's heatmap on the original image.

    The heatmap (``kind``, default the preferred one) is mapped back with its transform
    (un-pad, un-scale, un-flip, un-crop), so a right breast is shown as the radiologist
    sees it, never mirrored. Malignant lesions (manifest JSON) are outlined in green. When
    the image cannot be read the map is drawn on a neutral grey.
    """
    import cv2
    from PIL import Image

    from mammolens.data.heatmap_io import heatmap_and_lesion_mask, heatmap_original
    from mammolens.errors import MammolensError
    from mammolens.explain.colormap import blend_heatmap, to_unit

    try:
        heat, mask, _kind = heatmap_and_lesion_mask(heatmap_path, lesions, kind=kind, base_dir=base_dir)
    except ValueError:  # unparsable lesions: the map without outlines
        heat, _kind = heatmap_original(heatmap_path, kind)
        mask = None
    heat = to_unit(heat)
    h, w = heat.shape
    f = min(1.0, 2.0 * size / max(h, w))  # work at twice the thumbnail size: fast and sharp
    tw, th = max(1, int(round(w * f))), max(1, int(round(h * f)))
    grey = None
    if image_path:
        try:
            from mammolens.io import read_image

            px = np.asarray(read_image(image_path).pixels, dtype=np.float32)
            if px.shape == (h, w):
                grey = cv2.resize(px, (tw, th), interpolation=cv2.INTER_AREA)
        except (MammolensError, ValueError, OSError):
            grey = None
    if grey is None:
        grey = np.full((th, tw), 0.3, dtype=np.float32)
    rgb = blend_heatmap(grey, cv2.resize(heat, (tw, th), interpolation=cv2.INTER_LINEAR))
    if mask is not None:
        m = cv2.resize(mask.astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST)
        cnts, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        rgb = np.ascontiguousarray(rgb)
        # about 2 thumbnail pixels wide after the final downscale
        cv2.drawContours(rgb, cnts, -1, LESION_RGB, max(2, int(round(2 * max(tw, th) / size))))
    im = Image.fromarray(rgb)
    im.thumbnail((size, size))
    return im
