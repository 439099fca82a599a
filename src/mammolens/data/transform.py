"""The geometric transform from an original image to its preprocessed (cache) image.

Preprocessing crops the breast, optionally flips it horizontally so every breast faces
the same side, scales it uniformly and pads it to the target size. :class:`Transform`
records those steps so that points (lesion annotations) can be mapped forward and
arrays (heatmaps) mapped back onto the original image.

Coordinates are continuous pixel coordinates: pixel ``(row i, col j)`` covers
``[j, j+1) x [i, i+1)``; ``x`` is the column, ``y`` the row, origin top-left of the image
as stored in the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Transform:
    """original (orig_h x orig_w) -> crop -> [flip] -> scale -> pad -> (out_h x out_w)."""

    orig_h: int
    orig_w: int
    crop_y0: int
    crop_y1: int
    crop_x0: int
    crop_x1: int
    flipped: bool
    scale: float
    out_h: int
    out_w: int
    pad_top: int = 0
    pad_left: int = 0

    @classmethod
    def identity(cls, h: int, w: int) -> Transform:
        return cls(h, w, 0, h, 0, w, False, 1.0, h, w)

    @property
    def crop_h(self) -> int:
        return self.crop_y1 - self.crop_y0

    @property
    def crop_w(self) -> int:
        return self.crop_x1 - self.crop_x0

    @property
    def resized_h(self) -> int:
        return min(self.out_h - self.pad_top, max(1, int(round(self.crop_h * self.scale))))

    @property
    def resized_w(self) -> int:
        return min(self.out_w - self.pad_left, max(1, int(round(self.crop_w * self.scale))))

    # -- points ---------------------------------------------------------------------
    def forward_points(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` original ``(x, y)`` points to cache coordinates."""
        p = np.asarray(xy, dtype=float).reshape(-1, 2).copy()
        p[:, 0] -= self.crop_x0
        p[:, 1] -= self.crop_y0
        if self.flipped:
            p[:, 0] = self.crop_w - p[:, 0]
        p[:, 0] = p[:, 0] * (self.resized_w / self.crop_w) + self.pad_left
        p[:, 1] = p[:, 1] * (self.resized_h / self.crop_h) + self.pad_top
        return p

    def inverse_points(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` cache ``(x, y)`` points back to original coordinates."""
        p = np.asarray(xy, dtype=float).reshape(-1, 2).copy()
        p[:, 0] = (p[:, 0] - self.pad_left) * (self.crop_w / self.resized_w)
        p[:, 1] = (p[:, 1] - self.pad_top) * (self.crop_h / self.resized_h)
        if self.flipped:
            p[:, 0] = self.crop_w - p[:, 0]
        p[:, 0] += self.crop_x0
        p[:, 1] += self.crop_y0
        return p

    def forward_length(self, r: float) -> float:
        """Scale a length (e.g. a circle radius) from original to cache pixels."""
        return float(r) * 0.5 * (self.resized_w / self.crop_w + self.resized_h / self.crop_h)

    # -- arrays ---------------------------------------------------------------------
    def forward_array(self, arr: np.ndarray, *, interpolation: str = "area") -> np.ndarray:
        """Warp an array in original geometry into cache geometry (pads with 0)."""
        import cv2

        a = np.asarray(arr)
        if a.shape[:2] != (self.orig_h, self.orig_w):
            raise ValueError(f"array shape {a.shape[:2]} != original shape {(self.orig_h, self.orig_w)}")
        a = a[self.crop_y0 : self.crop_y1, self.crop_x0 : self.crop_x1]
        if self.flipped:
            a = a[:, ::-1]
        interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}[interpolation]
        work = a.astype(np.float32) if a.dtype == bool else a
        r = cv2.resize(np.ascontiguousarray(work), (self.resized_w, self.resized_h), interpolation=interp)
        out = np.zeros((self.out_h, self.out_w) + r.shape[2:], dtype=r.dtype)
        out[self.pad_top : self.pad_top + self.resized_h, self.pad_left : self.pad_left + self.resized_w] = r
        return out.astype(a.dtype) if a.dtype == bool else out

    def inverse_array(
        self, arr: np.ndarray, *, interpolation: str = "linear", fill: float = 0.0, shape: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Warp an array in cache geometry (e.g. a heatmap) back onto the original image.

        ``shape=(h, w)`` gives the original image's geometry scaled to that size (an overlay
        drawn on a shrunk original): the map is resized once, straight to it, instead of
        to a full-field original (13.6 MP, ~200 ms) and then down again.
        """
        import cv2

        a = np.asarray(arr, dtype=np.float32)
        if a.shape[:2] != (self.out_h, self.out_w):
            raise ValueError(f"array shape {a.shape[:2]} != cache shape {(self.out_h, self.out_w)}")
        a = a[self.pad_top : self.pad_top + self.resized_h, self.pad_left : self.pad_left + self.resized_w]
        interp = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}[interpolation]
        oh, ow = (self.orig_h, self.orig_w) if shape is None else (int(shape[0]), int(shape[1]))
        sy, sx = oh / self.orig_h, ow / self.orig_w
        y0, y1 = int(round(self.crop_y0 * sy)), int(round(self.crop_y1 * sy))
        x0, x1 = int(round(self.crop_x0 * sx)), int(round(self.crop_x1 * sx))
        out = np.full((oh, ow), fill, dtype=np.float32)
        if y1 <= y0 or x1 <= x0:
            return out
        r = cv2.resize(np.ascontiguousarray(a), (x1 - x0, y1 - y0), interpolation=interp)
        if self.flipped:
            r = r[:, ::-1]
        out[y0:y1, x0:x1] = r
        return out

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> Transform:
        return cls(**{k: (bool(v) if k == "flipped" else float(v) if k == "scale" else int(v)) for k, v in d.items()})

    @classmethod
    def from_json(cls, s: str) -> Transform:
        return cls.from_dict(json.loads(s))
