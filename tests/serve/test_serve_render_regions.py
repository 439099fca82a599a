"""The viewer's heatmap layer outlines the top-K regions (the boxes predict lists)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mammolens.serve.render import Display, heatmap_png

BOX = np.array([120, 230, 255])


def _layer(heat, d, **kw) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(heatmap_png(heat, d, max_h=200, **kw))))


def _box_pixels(rgba: np.ndarray) -> np.ndarray:
    return (np.abs(rgba[..., :3].astype(int) - BOX).sum(axis=2) < 30) & (rgba[..., 3] == 255)


def test_regions_outlined_and_mirrored_with_the_image():
    h, w = 200, 150
    raw = np.full((h, w), 0.5, np.float32)  # the model's input, in [0, 1]
    heat = np.zeros((h, w), np.float32)
    heat[40:60, 100:120] = 0.9  # best region: upper right as stored
    heat[140:150, 20:30] = 0.5  # second: lower left
    d = Display(raw, mirror=False)
    plain = _layer(heat, d, regions=0)
    assert not _box_pixels(plain).any()
    boxed = _layer(heat, d, regions=2)
    ys, xs = np.nonzero(_box_pixels(boxed))
    assert ((xs > 95) & (xs < 125) & (ys > 35) & (ys < 65)).any()  # around region 1
    assert ((xs > 15) & (xs < 35) & (ys > 135) & (ys < 155)).any()  # around region 2
    # hanging mirror: the boxes move with the layer
    m = Display(raw, mirror=True)
    ys, xs = np.nonzero(_box_pixels(_layer(heat, m, regions=1)))
    assert ((xs > w - 125) & (xs < w - 95) & (ys > 35) & (ys < 65)).any()
    assert not ((xs > 95) & (ys > 35) & (ys < 65)).any()
