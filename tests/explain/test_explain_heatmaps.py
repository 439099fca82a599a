"""Heatmaps: normalisation, Grad-CAM (native vs the grad-cam package), overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammolens.explain import (
    attention_maps,
    compute_heatmaps,
    gradcam_maps,
    localization_maps,
    overlay_png,
    overlay_rgb,
)
from mammolens.models import create_model


def test_attention_and_localisation_maps_in_unit_range():
    a = torch.softmax(torch.randn(2, 12), 1).view(2, 4, 3)
    m = attention_maps(a, (64, 48))
    assert m.shape == (2, 64, 48) and m.max() == pytest.approx(1.0) and m.min() >= 0
    loc = localization_maps(torch.tensor([[[-20.0, 20.0]]]), (4, 8))
    assert loc.min() >= 0 and loc.max() <= 1 and loc[0, 0, 0] < 0.01 and loc[0, 0, -1] > 0.99


def test_gradcam_native_matches_package_and_leaves_no_grads():
    torch.manual_seed(0)
    m = create_model("attention_tiny").eval()
    x = torch.rand(2, 1, 96, 64)
    native = gradcam_maps(m, x)
    ref = gradcam_maps(m, x, backend="pytorch-grad-cam")
    assert native.shape == (2, 96, 64)
    assert np.abs(native - ref).max() < 0.02
    assert all(p.grad is None for p in m.parameters())
    with pytest.raises(ValueError):
        gradcam_maps(m, x, backend="other")


def test_compute_heatmaps_for_baseline():
    m = create_model("baseline_tiny").eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = m(x)
    maps = compute_heatmaps(m, x, out, gradcam=True)
    assert set(maps[0]) == {"attention", "localization", "gradcam"}
    assert all(v.shape == (64, 64) for v in maps[1].values())


def test_overlay_png(tmp_path):
    import cv2

    img = np.tile(np.linspace(0, 1, 300, dtype=np.float32), (200, 1))
    hm = np.zeros_like(img)
    hm[50:80, 100:150] = 1
    rgb = overlay_rgb(img, hm)
    assert rgb.shape == (200, 300, 3) and rgb.dtype == np.uint8
    # hot region is tinted (not gray), cold region stays nearly gray
    hot = rgb[60, 120].astype(int)
    assert hot.max() - hot.min() > 25
    cold = rgb[150, 120].astype(int)
    assert cold.max() - cold.min() <= 2
    # the house colour map (inferno: dark purple -> pale yellow), not jet's blue -> red
    from mammolens.explain.colormap import heat_colormap

    np.testing.assert_allclose(heat_colormap(np.array([0.0, 1.0])), [[0, 0, 4], [252, 255, 164]])
    p = overlay_png(tmp_path / "o.png", img, hm, max_side=150)
    assert cv2.imread(str(p)).shape[:2] == (100, 150)
    with pytest.raises(ValueError):
        overlay_rgb(img, hm[:10])


def test_colormap_table_matches_interpolated_stops():
    """The lookup table is the five inferno stops interpolated linearly (within 0.1 of a level)."""
    from mammolens.explain.colormap import _STOPS, heat_colormap, heat_colormap_u8

    v = np.random.default_rng(0).random((64, 48)).astype(np.float32)
    exact = np.stack([np.interp(v, _STOPS[:, 0], _STOPS[:, c + 1]) for c in range(3)], axis=-1)
    got = heat_colormap(v)
    assert got.shape == (64, 48, 3) and got.dtype == np.float32
    assert np.abs(got - exact).max() < 0.1
    np.testing.assert_array_equal(heat_colormap_u8(v), np.rint(got).astype(np.uint8))
    # NaN and out-of-range values are clamped, as before
    np.testing.assert_allclose(heat_colormap(np.array([np.nan, -1.0, 2.0])), [[0, 0, 4], [0, 0, 4], [252, 255, 164]])


def test_overlay_matches_float_blend():
    """The uint8 blend equals grey * (1 - w) + colour * w in float within one level."""
    from mammolens.explain.colormap import _STOPS

    rng = np.random.default_rng(1)
    img = rng.random((120, 90)).astype(np.float32)
    img[:10] = 0.0  # air: stays grey
    hm = rng.random((120, 90)).astype(np.float32)
    hm[:, :5] = 0.0  # outside the crop: stays grey
    colors = np.stack([np.interp(hm, _STOPS[:, 0], _STOPS[:, c + 1]) for c in range(3)], axis=-1) / 255.0
    w = 0.4 * (0.25 + 0.75 * hm)
    w = np.where(((hm > 0) & (img > img.min() + 0.02))[..., None], w[..., None], 0.0)
    ref = (np.repeat(img[..., None], 3, axis=2) * (1 - w) + colors * w) * 255
    got = overlay_rgb(img, hm)
    assert got.dtype == np.uint8 and got.shape == (120, 90, 3)
    assert np.abs(got.astype(float) - ref).max() <= 1.0
    grey = np.rint(img[:10] * 255)
    assert np.abs(got[:10].astype(float) - grey[..., None]).max() <= 1.0


def test_overlay_of_a_map_with_nan_and_out_of_range_values_draws_them_as_0_and_clipped():
    """A NaN cell is drawn as 0 (grey), not as a NaN blend weight; values outside [0, 1]
    as the nearest end."""
    rng = np.random.default_rng(2)
    img = 0.2 + 0.6 * rng.random((40, 30)).astype(np.float32)
    hm = rng.random((40, 30)).astype(np.float32)
    bad = hm.copy()
    bad[:10] = np.nan
    bad[10:20] = 3.0
    bad[20:25] = -2.0
    ref = hm.copy()
    ref[:10], ref[10:20], ref[20:25] = 0.0, 1.0, 0.0
    np.testing.assert_array_equal(overlay_rgb(img, bad), overlay_rgb(img, ref))
    grey = np.rint(img[:10] * 255)
    assert np.abs(overlay_rgb(img, bad)[:10].astype(float) - grey[..., None]).max() <= 1.0


@pytest.mark.parametrize("size", [(64, 48), (70, 33), (8, 6)])
def test_upsample_matches_torch_bilinear(size):
    """The CPU path (OpenCV) equals F.interpolate(bilinear, align_corners=False)."""
    import torch.nn.functional as F

    from mammolens.explain.heatmaps import upsample

    m = torch.randn(2, 8, 6)
    ref = F.interpolate(m.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    got = upsample(m, size)
    assert got.shape == (2, *size) and got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-5)
