"""mammolens.data.augment: image and mask stay aligned, draws are seeded, settings kept."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mammolens.config import AugmentConfig, load_config  # noqa: E402
from mammolens.data.augment import (  # noqa: E402
    Augment,
    BlurOrNoise,
    Dihedral,
    Flip,
    Intensity,
    ResizedCrop,
    Rotate,
    patch_augment,
    rotate,
    view_augment,
    whole_image_augment,
)


def _pair(h: int = 40, w: int = 32, seed: int = 0):
    """A breast-like image whose bright pixels are exactly the mask's lesion (label 2)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    img[:, : w * 3 // 4] = 0.3
    mask = np.zeros((h, w), np.uint8)
    r, c = int(rng.integers(4, h - 14)), int(rng.integers(2, w * 3 // 4 - 12))
    img[r : r + 10, c : c + 9] = 0.9
    mask[r : r + 10, c : c + 9] = 2
    return torch.from_numpy(img)[None], torch.from_numpy(mask)


def _agreement(img: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of the lesion's pixels (by mask or by brightness) on which both agree."""
    bright, lesion = img[0] > 0.6, mask == 2
    union = (bright | lesion).sum().item()
    return (bright & lesion).sum().item() / max(1, union)


GEOMETRIC = {
    "hflip": (Flip("horizontal", 1.0), 1.0),
    "vflip": (Flip("vertical", 1.0), 1.0),
    "dihedral": (Dihedral(), 1.0),
    "rotate": (Rotate(30, p=1.0), 0.75),
    "crop": (ResizedCrop(0.5), 0.75),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_every_geometric_transform_moves_image_and_mask_together(name):
    t, least = GEOMETRIC[name]
    square = name in ("dihedral", "crop")
    for seed in range(12):
        img, mask = _pair(32 if square else 40, 32, seed)
        out, m = Augment(t)(img, mask, generator=torch.Generator().manual_seed(seed))
        assert out.shape == img.shape and m.shape == mask.shape and m.dtype == mask.dtype
        assert set(torch.unique(m).tolist()) <= {0, 2}  # nearest sampling: labels stay labels
        if (m == 2).sum() > 6:
            assert _agreement(out, m) >= least, (name, seed)


def test_batches_are_transformed_per_image_and_stay_aligned():
    pairs = [_pair(32, 32, s) for s in range(16)]
    imgs, masks = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    aug = Augment(Dihedral(), Flip("vertical", 0.5), Rotate(20, p=0.5))
    out, m = aug(imgs, masks, generator=torch.Generator().manual_seed(3))
    assert out.shape == imgs.shape and m.shape == masks.shape
    for i in range(16):
        assert _agreement(out[i], m[i]) >= 0.75
    # one image repeated: the draws are per image, not one for the batch
    same = aug(imgs[:1].repeat(16, 1, 1, 1), masks[:1].repeat(16, 1, 1), generator=torch.Generator().manual_seed(3))[1]
    assert len({tuple(x.flatten().tolist()) for x in same}) > 4


def test_intensity_blur_and_noise_leave_the_mask_alone():
    img, mask = _pair()
    for t in (Intensity(1.0, contrast=0.5, brightness=0.3, gamma=0.5, breast_only=True), BlurOrNoise(1.0, 0.0),
              BlurOrNoise(0.0, 1.0)):
        out, m = Augment(t)(img, mask, generator=torch.Generator().manual_seed(0))
        assert torch.equal(m, mask) and not torch.equal(out, img)
        assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_same_generator_state_same_result_and_mask_optional():
    img, mask = _pair()
    aug = whole_image_augment(AugmentConfig(rotate_p=1.0))
    a = aug(img, mask, generator=torch.Generator().manual_seed(5))
    b = aug(img, mask, generator=torch.Generator().manual_seed(5))
    c = aug(img, mask, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    only, none = aug(img, generator=torch.Generator().manual_seed(5))
    assert none is None and torch.equal(only, a[0])
    with pytest.raises(ValueError, match="mask shape"):
        aug(img, mask[:-1], generator=torch.Generator())


def test_flip_probability_is_kept():
    aug = Augment(Flip("horizontal", 0.3))
    x = torch.arange(4.0).view(1, 1, 2, 2).repeat(4000, 1, 1, 1)
    out, _ = aug(x, generator=torch.Generator().manual_seed(0))
    share = (out[:, 0, 0, 0] == 1.0).float().mean().item()
    assert abs(share - 0.3) < 0.03  # binomial sd 0.007


def test_dihedral_draws_the_eight_elements_uniformly_and_exactly():
    x = torch.arange(9.0).view(1, 1, 3, 3).repeat(8000, 1, 1, 1)
    out, _ = Augment(Dihedral())(x, generator=torch.Generator().manual_seed(1))
    keys = [tuple(o.flatten().int().tolist()) for o in out]
    counts = {k: keys.count(k) for k in set(keys)}
    assert len(counts) == 8 and all(abs(c / 8000 - 1 / 8) < 0.02 for c in counts.values())
    rect = torch.arange(6.0).view(1, 1, 2, 3).repeat(200, 1, 1, 1)
    assert Augment(Dihedral())(rect, generator=torch.Generator())[0].shape == rect.shape  # non-square: shape kept


def test_ranges_of_rotation_crop_and_intensity():
    img, mask = _pair(33, 33)
    # u at the ends of [0, 1) gives the ends of the documented ranges
    r = Rotate(10, p=0.5)
    assert torch.equal(r.apply(img, mask, [0.6, 0.0], None)[0], img)  # u >= p: not applied
    out, _ = r.apply(img, mask, [0.0, 1.0], None)
    ref, _ = rotate(img, mask, math.radians(10))
    assert torch.equal(out, ref)
    it = Intensity(1.0, contrast=0.2, brightness=0.1, gamma=0.2)
    flat = torch.full((1, 4, 4), 0.5)
    assert torch.allclose(it.apply(flat, None, [0.0, 0.5, 1.0, 0.5], None)[0], torch.full((1, 4, 4), 0.6))
    assert torch.allclose(it.apply(flat, None, [0.0, 0.5, 0.5, 1.0], None)[0], torch.full((1, 4, 4), 0.5 ** 1.2))
    assert torch.allclose(it.apply(flat, None, [0.0, 0.5, 0.5, 0.0], None)[0], torch.full((1, 4, 4), 0.5 ** (1 / 1.2)))
    ramp = torch.linspace(0.2, 0.6, 16).view(1, 4, 4)
    hi = it.apply(ramp, None, [0.0, 1.0, 0.5, 0.5], None)[0]
    assert torch.allclose(hi - hi.mean(), 1.2 * (ramp - ramp.mean()), atol=1e-6)
    # a crop of area 1 is the identity; a smaller one magnifies
    assert torch.equal(ResizedCrop(1.0).apply(img, mask, [0.3, 0.5, 0.2, 0.9], None)[0], img)
    _, m = ResizedCrop(0.5).apply(img, mask, [0.0, 0.5, 0.5, 0.5], None)
    assert (m == 2).sum() > (mask == 2).sum()


def test_the_callers_settings():
    """The dataset, patch and SimCLR pipelines keep the probabilities and ranges they had."""
    mias = load_config("mias").data.augment
    aug = whole_image_augment(mias)
    kinds = [type(t).__name__ for t in aug.transforms]
    assert kinds == ["Flip", "Flip", "Rotate", "Intensity"] and aug.n_draws == 8
    hf, vf, rot, inten = aug.transforms
    assert (hf.axis, hf.p, vf.axis, vf.p) == ("horizontal", 0.0, "vertical", 0.5)
    assert (rot.max_deg, rot.p) == (10.0, 0.5)
    assert (inten.p, inten.contrast, inten.brightness, inten.gamma, inten.breast_only) == (0.8, 0.2, 0.1, 0.2, True)
    d, pi = patch_augment().transforms
    assert isinstance(d, Dihedral)
    assert (pi.p, pi.contrast, pi.brightness, pi.breast_only) == (1.0, 0.2, 0.05, False)
    assert math.log1p(pi.gamma) == pytest.approx(0.3)
    crop, dv, vi, bn = view_augment().transforms
    assert crop.min_scale == 0.5 and crop.ratio == (3 / 4, 4 / 3) and isinstance(dv, Dihedral)
    assert (vi.p, vi.contrast, vi.brightness) == (0.8, 0.3, 0.1) and math.log1p(vi.gamma) == pytest.approx(0.4)
    assert (bn.blur_p, bn.noise_p, bn.sigma, bn.noise_std) == (0.5, 0.25, (0.1, 2.0), (0.01, 0.05))


def _reference_augment(image, mask, cfg, gen):
    """The dataset's augmentation as it was written before the pipeline (kept to prove the
    rewrite changed no draw: whole-image runs and the demo give the same numbers)."""
    u = torch.rand(8, generator=gen).tolist()
    if u[0] < cfg.hflip:
        image, mask = image.flip(-1), mask.flip(-1)
    if u[1] < cfg.vflip:
        image, mask = image.flip(-2), mask.flip(-2)
    if cfg.rotate_deg > 0 and u[2] < cfg.rotate_p:
        image, mask = rotate(image, mask, math.radians((2 * u[3] - 1) * cfg.rotate_deg))
    if u[4] < cfg.intensity_p:
        breast = image > 0
        x = image
        if cfg.contrast > 0:
            c = 1 + (2 * u[5] - 1) * cfg.contrast
            m = x[breast].mean() if breast.any() else x.mean()
            x = (x - m) * c + m
        if cfg.brightness > 0:
            x = x + (2 * u[6] - 1) * cfg.brightness
        x = x.clamp(0, 1)
        if cfg.gamma > 0:
            x = x.clamp_min(1e-6) ** math.exp((2 * u[7] - 1) * math.log1p(cfg.gamma))
        image = torch.where(breast, x.clamp(0, 1), torch.zeros_like(x))
    return image.contiguous(), mask.contiguous()


@pytest.mark.parametrize("cfg", [
    AugmentConfig(),
    SimpleNamespace(hflip=0.0, vflip=0.5, rotate_deg=10.0, rotate_p=0.5, contrast=0.2, brightness=0.1, gamma=0.2, intensity_p=0.8),
    SimpleNamespace(hflip=0.5, vflip=0.5, rotate_deg=0.0, rotate_p=0.9, contrast=0.0, brightness=0.3, gamma=0.0, intensity_p=1.0),
])
def test_whole_image_pipeline_draws_exactly_as_the_dataset_did(cfg):
    aug = whole_image_augment(cfg)
    for seed in range(25):
        img, mask = _pair(seed=seed)
        img = img + 0.05 * torch.rand(img.shape, generator=torch.Generator().manual_seed(seed)) * (img > 0)
        a = aug(img, mask, generator=torch.Generator().manual_seed(seed))
        b = _reference_augment(img, mask, cfg, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), seed


def test_flips_and_rotation_move_a_point_exactly():
    img = torch.zeros(1, 16, 12)
    img[0, 2, 3] = 1.0
    mask = torch.zeros(16, 12, dtype=torch.uint8)
    mask[2, 3] = 2
    cfg = SimpleNamespace(hflip=1.0, vflip=1.0, rotate_deg=0.0, rotate_p=0.0, intensity_p=0.0, contrast=0, brightness=0, gamma=0)
    out, m = whole_image_augment(cfg)(img, mask, generator=torch.Generator().manual_seed(0))
    assert out[0, 13, 8] == 1.0 and m[13, 8] == 2
    # a 90 degree rotation of a square image moves a point as expected
    sq = torch.zeros(1, 9, 9)
    sq[0, 1, 4] = 1.0
    sm = torch.zeros(9, 9, dtype=torch.uint8)
    sm[1, 4] = 2
    r, rm = rotate(sq, sm, math.pi / 2)
    y, x = np.unravel_index(int(r[0].argmax()), (9, 9))
    assert rm[y, x] == 2 and (y, x) in {(4, 7), (4, 1)}
