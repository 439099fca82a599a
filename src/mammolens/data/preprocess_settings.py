"""How images are turned into cache images: :class:`PreprocessSettings` (part of every cache key).

Its own module so that the cache format (:mod:`mammolens.data.cache`) and the algorithm
(:mod:`mammolens.data.preprocess`) can both use it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: bump when the algorithm changes in a way that changes the cached pixels
PREPROCESS_VERSION = 1


class PreprocessSettings(BaseModel):
    """How images are turned into cache images; part of every cache key.

    Attributes
    ----------
    size
        ``(H, W)`` of the cache image.
    dtype
        Storage type of the cached image: ``uint16`` (exact to 1/65535) or ``float16``.
    window
        ``"auto"``: the reader's default display window (DICOM VOI LUT / first window;
        full range for PNG/PGM); an integer ``N``: the N-th (0-based) DICOM window.
    threshold
        Breast segmentation threshold: ``"otsu"`` (default), ``"triangle"`` (lower: keeps
        more of a faint skin line, but also film background on digitised film), or a fixed
        value in (0, 1) on the display-ready image.
    low_threshold
        Hysteresis for the skin line: the breast found at ``threshold`` grows into the
        connected region above ``low_threshold x threshold`` (0 disables; Otsu only: the
        triangle threshold already sits at the foot of the background peak).
    crop
        Crop to the breast (``False``: keep the whole image; flipping still applies).
    mask_background
        Set everything outside the (slightly dilated) breast mask to ``pad_value``: this
        removes burned-in labels and markers that fall inside the breast's bounding box.
    margin
        Margin added around the breast's bounding box, as a fraction of the image's long
        side.
    seg_size
        Long side (pixels) of the downsampled copy the segmentation runs on.
    min_breast_fraction
        The breast must cover at least this fraction of the image, else the image is
        rejected as "no breast found".
    flip_to
        Where the chest wall goes: ``"left"`` (default), ``"right"``, or ``"none"`` (no
        flipping).
    pad_value
        Value of the padding, in [0, 1].
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: tuple[int, int] = (1024, 512)
    dtype: Literal["uint16", "float16"] = "uint16"
    window: Literal["auto"] | int = "auto"
    threshold: Literal["triangle", "otsu"] | float = "otsu"
    low_threshold: float = Field(0.35, ge=0.0, lt=1.0)
    crop: bool = True
    mask_background: bool = True
    margin: float = Field(0.01, ge=0.0, le=0.5)
    seg_size: int = Field(512, ge=64, le=4096)
    min_breast_fraction: float = Field(0.005, gt=0.0, lt=1.0)
    flip_to: Literal["left", "right", "none"] = "left"
    pad_value: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("size", mode="before")
    @classmethod
    def _parse_size(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_size(v)
        return v

    @field_validator("size")
    @classmethod
    def _check_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 8 or v[1] < 8 or v[0] > 16384 or v[1] > 16384:
            raise ValueError(f"size must be between 8 and 16384 pixels per side, got {v[0]}x{v[1]}")
        return v

    @field_validator("window", mode="before")
    @classmethod
    def _parse_window(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() != "auto":
            try:
                v = int(v)
            except ValueError:
                raise ValueError(f"window must be 'auto' or a window index, got {v!r}") from None
        if isinstance(v, int) and v < 0:
            raise ValueError("window index must be >= 0")
        return v

    @model_validator(mode="after")
    def _check_threshold(self) -> PreprocessSettings:
        t = self.threshold
        if isinstance(t, float) and not 0.0 < t < 1.0:
            raise ValueError(f"a fixed threshold must be in (0, 1), got {t}")
        return self

    def key(self) -> str:
        """A short stable hash (12 hex digits) of the settings and the algorithm version."""
        payload = json.dumps({"v": PREPROCESS_VERSION, **self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"1024x512"``) into ``(H, W)``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"size must be HxW, e.g. 1024x512, got {text!r}")
    return int(m.group(1)), int(m.group(2))


__all__ = ["PREPROCESS_VERSION", "PreprocessSettings", "parse_size"]
