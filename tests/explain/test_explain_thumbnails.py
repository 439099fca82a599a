"""Report thumbnails: the heatmap on the image as stored (un-flipped, un-cropped), house colours."""

from __future__ import annotations

import json

import cv2
import numpy as np

from mammolens.data.heatmap_io import save_heatmaps
from mammolens.data.transform import Transform
from mammolens.explain.thumbnails import overlay_thumbnail


def test_thumbnail_in_original_geometry(tmp_path):
    h, w = 120, 90
    yy, xx = np.mgrid[:h, :w]
    # a right breast: tissue against the right edge, brighter at the top (asymmetric both ways)
    img = np.where(xx > 30, 0.3 + 0.5 * (1 - yy / h), 0.0).astype(np.float32)
    src = tmp_path / "img.png"
    cv2.imwrite(str(src), np.round(img * 255).astype(np.uint8))
    # preprocessing cropped the breast, flipped it and scaled it into a 40x30 cache image
    tf = Transform(orig_h=h, orig_w=w, crop_y0=0, crop_y1=h, crop_x0=30, crop_x1=w, flipped=True,
                   scale=1 / 3, out_h=40, out_w=30, pad_top=0, pad_left=10)
    # cache-geometry heatmap hot at cache column 12 (= original column 30 + (60 - 6) = 84), row 5
    heat = np.zeros((40, 30), np.float32)
    heat[4:7, 11:14] = 1.0
    hp = save_heatmaps(tmp_path / "h.npz", {"localization": heat}, tf)
    lesion = json.dumps([{"shape": "circle", "cx": 84, "cy": 16, "r": 8, "pathology": "malignant"}])
    im = np.asarray(overlay_thumbnail(src, hp, lesions=lesion, size=60))
    assert im.shape[:2] == (60, 45)  # the original's aspect, not the cache's
    grey = im.astype(np.float32).mean(axis=2)
    # tissue on the right as stored: the left third is dark
    assert grey[:, :10].mean() < grey[:, 20:].mean()
    # the hot spot is coloured near the top-right (un-flipped), not the top-left
    tint = im.astype(int).max(axis=2) - im.astype(int).min(axis=2)
    y, x = np.unravel_index(int(np.argmax(tint)), tint.shape)
    assert x > 30 and y < 20, (x, y)
    # the lesion outline is drawn in green
    i = im.astype(int)
    g = (i[..., 1] > i[..., 0] + 60) & (i[..., 1] > i[..., 2] + 60)
    assert g.any()
