"""Augmentation, written once: random transforms applied jointly to images and lesion masks.

An :class:`Augment` pipeline is a list of transforms applied in order to a batch of
images ``(B, 1, H, W)`` (or one image ``(1, H, W)``) in [0, 1] and, when given, their
masks ``(B, H, W)`` / ``(H, W)`` (integer labels: 0 background, 1 benign, 2 malignant).
Geometric transforms move image and mask together (the mask with nearest-neighbour
sampling, so its labels stay labels); intensity transforms leave the mask alone.

Every stage that augments builds its pipeline here:

* the whole-image dataset (:class:`mammolens.data.dataset.MammoDataset`):
  :func:`whole_image_augment` from the configuration's ``data.augment`` (flips, a small
  rotation, intensity changes on the breast);
* the patch stage (:mod:`mammolens.train.patch_pretrain`): :func:`patch_augment` (the
  8 flips / quarter turns, intensity jitter);
* SimCLR (:mod:`mammolens.train.ssl_pretrain`): :func:`view_augment`, the stronger
  setting (random resized crop, flips / turns, jitter, blur or noise); its two views are
  two draws of that one pipeline.

Randomness. Every number comes from the ``torch.Generator`` passed to the call. A call
first draws one ``(B, k)`` block of uniforms, ``k`` the sum of the transforms'
:attr:`Transform.n_draws`, the same count whatever the outcomes (then transforms that need
a noise field draw it, in order). The same pipeline, input and generator state give the
same output on any device; the parameters are drawn per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

Image = torch.Tensor  # (1, H, W)
Mask = torch.Tensor | None  # (H, W)


class Transform:
    """One random transform of one image (and mask).

    Subclasses set :attr:`n_draws` (uniforms used per image) and implement :meth:`apply`;
    a transform that needs more randomness (a noise field) overrides :meth:`extra`.
    """

    n_draws: int = 0

    def extra(self, batch: torch.Tensor, gen: torch.Generator) -> Any:
        """Extra random draws for the whole batch, made after the uniforms (default: none)."""
        return None

    def apply(self, image: Image, mask: Mask, u: Sequence[float], extra: Any) -> tuple[Image, Mask]:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Flip(Transform):
    """Mirror left-right (``axis="horizontal"``) or top-bottom (``"vertical"``) with probability ``p``."""

    n_draws = 1

    def __init__(self, axis: Literal["horizontal", "vertical"], p: float = 0.5) -> None:
        if axis not in ("horizontal", "vertical"):
            raise ValueError(f"axis must be horizontal or vertical, got {axis!r}")
        self.axis, self.p = axis, float(p)

    def apply(self, image: Image, mask: Mask, u: Sequence[float], extra: Any) -> tuple[Image, Mask]:
        if u[0] < self.p:
            d = -1 if self.axis == "horizontal" else -2
            image = image.flip(d)
            mask = None if mask is None else mask.flip(d)
        return image, mask


class Dihedral(Transform):
    """One of the 8 flips / quarter turns of a square, uniformly (``rot90`` k times, then a
    left-right mirror with probability 1/2). Exact: pixels are permuted, never resampled.
    A non-square image gets one of the 4 elements that keep its shape."""

    n_draws = 2

    def apply(self, image: Image, mask: Mask, u: Sequence[float], extra: Any) -> tuple[Image, Mask]:
        k = min(3, int(u[0] * 4))
        if image.shape[-1] != image.shape[-2]:
            k = 2 * (k // 2)
        if k:
            image = torch.rot90(image, k, dims=(-2, -1))
            mask = None if mask is None else torch.rot90(mask, k, dims=(-2, -1))
        if u[1] < 0.5:
            image = image.flip(-1)
            mask = None if mask is None else mask.flip(-1)
        return image, mask


def _resample(image: Image, mask: Mask, theta: torch.Tensor, padding: str) -> tuple[Image, Mask]:
    """``image`` bilinear and ``mask`` nearest-neighbour on the affine grid ``theta`` (1, 2, 3)."""
    _, h, w = image.shape
    grid = F.affine_grid(theta.to(image.device), [1, 1, h, w], align_corners=False)
    img = F.grid_sample(image.unsqueeze(0).float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)[0]
    if mask is not None:
        m = F.grid_sample(mask.float()[None, None], grid, mode="nearest", padding_mode=padding, align_corners=False)[0, 0]
        mask = m.round().to(mask.dtype)
    return img, mask


def rotate(image: Image, mask: Mask, angle: float) -> tuple[Image, Mask]:
    """Rotate ``image (1, H, W)`` and ``mask (H, W)`` by ``angle`` radians about the centre
    (bilinear / nearest, zero fill)."""
    _, h, w = image.shape
    c, s = math.cos(angle), math.sin(angle)
    # rotation in pixel space expressed in normalised grid coordinates (non-square safe)
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float32).unsqueeze(0)
    return _resample(image, mask, theta, "zeros")


class Rotate(Transform):
    """With probability ``p``, rotate by an angle uniform in ``[-max_deg, max_deg]`` degrees
    (zero fill: the corners brought in are background)."""

    n_draws = 2

    def __init__(self, max_deg: float, p: float = 0.5) -> None:
        self.max_deg, self.p = float(max_deg), float(p)

    def apply(self, image: Image, mask: Mask, u: Sequence[float], extra: Any) -> tuple[Image, Mask]:
        if self.max_deg > 0 and u[0] < self.p:
            image, mask = rotate(image, mask, math.radians((2 * u[1] - 1) * self.max_deg))
        return image, mask


class ResizedCrop(Transform):
    """Random resized crop (SimCLR's): a window of area ``min_scale``--1 of the image and
    aspect ratio in ``ratio`` (narrowed so that the window fits), resized back to the
    image's size."""

    n_draws = 4

    def __init__(self, min_scale: float = 0.5, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        self.min_scale, self.ratio = float(min_scale), (float(ratio[0]), float(ratio[1]))

    def apply(self, image: Image, mask: Mask, u: Sequence[float], extra: Any) -> tuple[Image, Mask]:
        area = self.min_scale + (1 - self.min_scale) * u[0]
        # aspect ratio log-uniform, narrowed so the crop fits: area * ratio <= 1 and
        # area / ratio <= 1 (the crop keeps the drawn area; area 1 is the whole image)
        lo = math.log(max(area, self.ratio[0]))
        hi = math.log(min(1 / area, self.ratio[1]))
        r = math.exp(lo + (hi - lo) * u[1])
        sx, sy = min(1.0, math.sqrt(area * r)), min(1.0, math.sqrt(area / r))
        tx, ty = (2 * u[2] - 1) * (1 - sx), (2 * u[3] - 1) * (1 - sy)
        if sx == 1.0 and sy == 1.0:
            return image, mask  # the whole image: nothing to resample
        theta = torch.tensor([[[sx, 0.0, tx], [0.0, sy, ty]]], dtype=torch.float32)
        img, mask = _resample(image, mask, theta, "border")
        return img.to(image.dtype), mask


class Intensity(Transform):
    """With probability ``p``: contrast, brightness and gamma, each drawn per image.

    ``x -> (x - mean) * c + mean`` with ``c`` uniform in ``1 +- contrast``; ``+ b`` with
    ``b`` uniform in ``+- brightness``; clip to [0, 1]; ``x ** g`` with ``log g`` uniform
    in ``+- log(1 + gamma)``. ``breast_only``: only pixels above 0 change (the mean is
    theirs) and the background stays 0 (a whole mammogram); otherwise every pixel does
    (a patch). A setting of 0 leaves that change out.
    """

    n_draws = 4

    def __init__(self, p: float = 1.0, *, contrast: float = 0.0, brightness: float = 0.0, gamma: float = 0.0,
                 breast_only: bool = False) -> None:
        self.p, self.contrast, self.brightness, self.gamma = float(p), float(contrast), float(brightness), float(gamma)
        self.breast_only = bool(breast_only)

    def apply(self, image: Image, mask: Mask, u: Sequence[float], extra: Any) -> tuple[Image, Mask]:
        if not u[0] < self.p:
            return image, mask
        x = image
        breast = image > 0 if self.breast_only else None
        if self.contrast > 0:
            c = 1 + (2 * u[1] - 1) * self.contrast
            if breast is not None:
                m = x[breast].mean() if breast.any() else x.mean()
            else:
                m = x.mean()
            x = (x - m) * c + m
        if self.brightness > 0:
            x = x + (2 * u[2] - 1) * self.brightness
        x = x.clamp(0, 1)
        if self.gamma > 0:
            g = math.exp((2 * u[3] - 1) * math.log1p(self.gamma))
            x = x.clamp_min(1e-6) ** g
        x = x.clamp(0, 1)
        if breast is not None:
            x = torch.where(breast, x, torch.zeros_like(x))
        return x, mask


def gaussian_blur(image: Image, sigma: float, radius: int) -> Image:
    """Separable Gaussian blur of ``image (1, H, W)`` (reflect padding; ``radius < H, W``)."""
    t = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))  # along x
    y = F.conv2d(y, k.view(1, 1, -1, 1))  # along y
    return y[0]


class BlurOrNoise(Transform):
    """Gaussian blur (sigma uniform in ``sigma``, pixels) with probability ``blur_p``, else
    additive Gaussian noise (std uniform in ``noise_std``) with probability ``noise_p``:
    blur removes fine texture, noise adds it."""

    n_draws = 3

    def __init__(self, blur_p: float = 0.5, noise_p: float = 0.25, *, sigma: tuple[float, float] = (0.1, 2.0),
                 noise_std: tuple[float, float] = (0.01, 0.05)) -> None:
        self.blur_p, self.noise_p = float(blur_p), float(noise_p)
        self.sigma, self.noise_std = (float(sigma[0]), float(sigma[1])), (float(noise_std[0]), float(noise_std[1]))

    def extra(self, batch: torch.Tensor, gen: torch.Generator) -> Any:
        return torch.randn(batch.shape[0], *batch.shape[-3:], generator=gen) if self.noise_p > 0 else None

    def apply(self, image: Image, mask: Mask, u: Sequence[float], extra: Any) -> tuple[Image, Mask]:
        if u[0] < self.blur_p:
            radius = min(6, (min(image.shape[-2:]) - 1) // 2)  # 3 sigma of the widest blur; reflect needs radius < side
            if radius >= 1:
                sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[1]
                image = gaussian_blur(image, sigma, radius)
        elif u[0] < self.blur_p + self.noise_p and extra is not None:
            std = self.noise_std[0] + (self.noise_std[1] - self.noise_std[0]) * u[2]
            image = (image + extra.to(image.device, image.dtype) * std).clamp(0, 1)
        return image, mask


class Augment:
    """A pipeline of transforms, applied in order to images and masks (see the module docstring).

    Examples
    --------
    >>> aug = Augment(Flip("horizontal", 0.5), Rotate(15, p=0.5), Intensity(0.8, contrast=0.2))
    >>> image, mask = aug(image, mask, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    def __init__(self, *transforms: Transform) -> None:
        self.transforms = list(transforms)
        self.n_draws = sum(t.n_draws for t in self.transforms)

    def __repr__(self) -> str:
        return f"Augment({', '.join(map(repr, self.transforms))})"

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None, *,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment ``image`` ((B, 1, H, W) or (1, H, W)) and ``mask`` ((B, H, W) / (H, W) or None)."""
        single = image.ndim == 3
        batch = image[None] if single else image
        masks = None if mask is None else (mask[None] if single else mask)
        if batch.ndim != 4 or batch.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W) or (1, H, W), got {tuple(image.shape)}")
        if masks is not None and (masks.shape[0] != batch.shape[0] or masks.shape[-2:] != batch.shape[-2:]):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)}")
        u = torch.rand(batch.shape[0], self.n_draws, generator=generator).tolist()
        extras = [t.extra(batch, generator) for t in self.transforms]
        out_i, out_m = [], []
        for i in range(batch.shape[0]):
            img, m = batch[i], None if masks is None else masks[i]
            j = 0
            for t, ex in zip(self.transforms, extras, strict=True):
                img, m = t.apply(img, m, u[i][j : j + t.n_draws], None if ex is None else ex[i])
                j += t.n_draws
            out_i.append(img)
            out_m.append(m)
        if single:
            return out_i[0].contiguous(), None if masks is None else out_m[0].contiguous()
        return torch.stack(out_i), None if masks is None else torch.stack(out_m)


def whole_image_augment(cfg: Any) -> Augment:
    """The whole-image dataset's pipeline from a :class:`mammolens.config.AugmentConfig`.

    Left-right flip (``hflip``), top-bottom flip (``vflip``), a rotation of up to
    ``rotate_deg`` degrees with probability ``rotate_p``, and with probability
    ``intensity_p`` contrast / brightness / gamma on the breast pixels (the background
    stays black).
    """
    return Augment(
        Flip("horizontal", cfg.hflip),
        Flip("vertical", cfg.vflip),
        Rotate(cfg.rotate_deg, cfg.rotate_p),
        Intensity(cfg.intensity_p, contrast=cfg.contrast, brightness=cfg.brightness, gamma=cfg.gamma, breast_only=True),
    )


def patch_augment() -> Augment:
    """The patch stage's pipeline: one of the 8 flips / quarter turns, then gamma
    (``log g`` in +-0.3), contrast (x 0.8--1.2) and brightness (+-0.05) on every patch."""
    return Augment(Dihedral(), Intensity(1.0, contrast=0.2, brightness=0.05, gamma=math.expm1(0.3)))


def view_augment(*, min_scale: float = 0.5, jitter_p: float = 0.8, blur_p: float = 0.5, noise_p: float = 0.25) -> Augment:
    """SimCLR's view pipeline (Chen et al. 2020, for gray patches).

    Random resized crop (area ``min_scale``--1, aspect 3/4--4/3), one of the 8 flips /
    quarter turns (a mammogram patch has no preferred orientation), with probability
    ``jitter_p`` gamma (``log g`` in +-0.4), contrast (x 0.7--1.3) and brightness
    (+-0.1) -- the gray-level analogue of SimCLR's colour distortion --, then Gaussian
    blur (sigma 0.1--2 px) with probability ``blur_p`` or else Gaussian noise (std
    0.01--0.05) with probability ``noise_p``.
    """
    return Augment(
        ResizedCrop(min_scale),
        Dihedral(),
        Intensity(jitter_p, contrast=0.3, brightness=0.1, gamma=math.expm1(0.4)),
        BlurOrNoise(blur_p, noise_p),
    )
