"""What every image reader returns, and the plausible size of a mammogram.

Shared by :mod:`mammolens.io.images` (the format dispatch) and :mod:`mammolens.io.dicom`,
so neither imports the other for it (``images`` calls ``dicom``; never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: largest plausible matrix side (pixels); mammography detectors are < 6000
MAX_SIDE = 12000
#: smallest plausible matrix side (pixels), for every format alike
MIN_SIDE = 16


def implausible_size(h: int, w: int) -> bool:
    """True when an ``h`` x ``w`` matrix cannot be a mammogram (a side outside ``MIN_SIDE..MAX_SIDE``)."""
    return h < MIN_SIDE or w < MIN_SIDE or h > MAX_SIDE or w > MAX_SIDE


@dataclass
class LoadedImage:
    """A decoded image: ``pixels`` float32 (H, W) in [0, 1] (dense tissue bright) and ``meta``."""

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


__all__ = ["MAX_SIDE", "MIN_SIDE", "LoadedImage", "implausible_size"]
