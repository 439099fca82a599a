"""Lesion annotations: parsing the manifest's ``lesions`` JSON and rasterising masks.

The ``lesions`` column holds a JSON list; each item is one finding in *original* pixel
coordinates of the stored image (x = column, y = row, origin top-left; adapters convert
datasets with other conventions, e.g. mini-MIAS measures y from the bottom)::

    {"shape": "circle",  "cx": 535, "cy": 599, "r": 56, ...}
    {"shape": "box",     "x0": 10, "y0": 20, "x1": 90, "y1": 120, ...}
    {"shape": "polygon", "points": [[x, y], ...], ...}
    {"shape": "point",   "x": 100, "y": 200, ...}          (e.g. a calcification)
    {"shape": "mask",    "path": "/abs/or/relative.png", ...}  (non-zero = lesion)

Common optional keys: ``pathology`` (``malignant``, ``benign``, ``unknown``), ``kind``
(``mass``, ``calcification``, ``architectural_distortion``, ``asymmetry``, ...),
``birads``, ``source`` (the dataset's own class code).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mammolens.data.transform import Transform

SHAPES = ("circle", "box", "polygon", "point", "mask")
PATHOLOGIES = ("malignant", "benign", "unknown")

#: values in rasterised masks
MASK_BACKGROUND, MASK_BENIGN, MASK_MALIGNANT = 0, 1, 2

#: radius (original pixels) given to ``point`` annotations when rasterised
POINT_RADIUS = 5.0


@dataclass
class Lesion:
    shape: Literal["circle", "box", "polygon", "point", "mask"]
    geometry: dict[str, Any]
    pathology: str = "unknown"
    kind: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lesion:
        d = dict(d)
        shape = d.pop("shape", None)
        if shape not in SHAPES:
            raise ValueError(f"lesion shape must be one of {SHAPES}, got {shape!r}")
        keys = {"circle": ("cx", "cy", "r"), "box": ("x0", "y0", "x1", "y1"), "polygon": ("points",), "point": ("x", "y"), "mask": ("path",)}[shape]
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"{shape} lesion lacks {missing}")
        geometry = {k: d.pop(k) for k in keys}
        pathology = str(d.pop("pathology", "unknown") or "unknown").lower()
        if pathology not in PATHOLOGIES:
            raise ValueError(f"lesion pathology must be one of {PATHOLOGIES}, got {pathology!r}")
        return cls(shape, geometry, pathology, str(d.pop("kind", "") or ""), d)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": self.shape, **self.geometry, "pathology": self.pathology}
        if self.kind:
            out["kind"] = self.kind
        out.update(self.extra)
        return out

    def center(self) -> tuple[float, float]:
        g = self.geometry
        if self.shape == "circle":
            return float(g["cx"]), float(g["cy"])
        if self.shape == "point":
            return float(g["x"]), float(g["y"])
        if self.shape == "box":
            return (float(g["x0"]) + float(g["x1"])) / 2, (float(g["y0"]) + float(g["y1"])) / 2
        if self.shape == "polygon":
            p = np.asarray(g["points"], dtype=float)
            return float(p[:, 0].mean()), float(p[:, 1].mean())
        raise ValueError("the centre of a mask lesion needs the mask file: rasterise it")


def parse_lesions(s: str | list | None) -> list[Lesion]:
    """Parse the manifest's ``lesions`` cell (JSON string or already-parsed list)."""
    if s is None or (isinstance(s, float) and np.isnan(s)) or s == "":
        return []
    items = json.loads(s) if isinstance(s, str) else s
    if not isinstance(items, list):
        raise ValueError("lesions must be a JSON list")
    return [Lesion.from_dict(d) for d in items]


def dump_lesions(lesions: list[Lesion] | list[dict[str, Any]]) -> str:
    """Serialise lesions for the manifest's ``lesions`` column ("" when none)."""
    if not lesions:
        return ""
    return json.dumps([le.to_dict() if isinstance(le, Lesion) else le for le in lesions], separators=(",", ":"))


def rebase_mask_paths(
    lesions: str | list[dict[str, Any]],
    *,
    folders: Sequence[str | Path] = (),
    must_exist: bool = False,
    relative_to: str | Path | None = None,
) -> str | list[dict[str, Any]]:
    """Rebase the file paths of ``mask`` lesions (other shapes untouched): the one place
    that knows how mask paths in a lesions cell relate to folders.

    Parameters
    ----------
    lesions
        A manifest ``lesions`` cell (JSON text) or the parsed list; returned in the same
        form (text compact; a cell that is empty, holds no mask or is not a JSON list comes
        back unchanged: parsing reports it elsewhere).
    folders
        Make relative paths absolute against the first folder (with ``must_exist``, the
        first in which the file exists; unchanged when none has it).
    relative_to
        Make absolute paths relative to this folder (POSIX separators; URLs and paths on
        another drive stay as they are).
    """
    if isinstance(lesions, str):
        if not lesions or '"mask"' not in lesions:
            return lesions
        try:
            items = json.loads(lesions)
        except json.JSONDecodeError:
            return lesions
        if not isinstance(items, list):
            return lesions
        return json.dumps(rebase_mask_paths(items, folders=folders, must_exist=must_exist, relative_to=relative_to),
                          separators=(",", ":"))
    for le in lesions:
        if not isinstance(le, dict) or le.get("shape") != "mask":
            continue
        p = str(le.get("path", ""))
        if not Path(p).is_absolute():
            for f in folders:
                if f and (not must_exist or (Path(f) / p).exists()):
                    le["path"] = p = str(Path(f) / p)
                    break
        if relative_to is not None and Path(p).is_absolute():
            le["path"] = relative_path(p, relative_to)
    return lesions


def relative_path(p: str, base: str | Path) -> str:
    """``p`` relative to ``base`` with POSIX separators (URLs and other drives unchanged)."""
    import os

    if not p or "://" in p:
        return p
    try:
        return Path(os.path.relpath(p, base)).as_posix()
    except ValueError:  # another drive on Windows
        return p


def rasterize_lesions(
    lesions: list[Lesion],
    shape: tuple[int, int],
    *,
    transform: Transform | None = None,
    base_dir: str | Path | None = None,
) -> np.ndarray:
    """Rasterise lesions into a uint8 mask of ``shape`` (0 bg, 1 benign/unknown, 2 malignant).

    Without ``transform`` the mask is in original geometry (``shape`` = original size);
    with it, shapes are mapped into cache geometry (``shape`` = ``(out_h, out_w)``).
    Malignant lesions are drawn last so they win where findings overlap.
    """
    import cv2

    h, w = shape
    mask = np.zeros((h, w), dtype=np.uint8)
    order = sorted(lesions, key=lambda le: le.pathology == "malignant")
    for le in order:
        value = MASK_MALIGNANT if le.pathology == "malignant" else MASK_BENIGN
        g = le.geometry
        if le.shape == "mask":
            mpath = Path(g["path"])
            if not mpath.is_absolute() and base_dir is not None:
                mpath = Path(base_dir) / mpath
            from mammolens.io.images import read_mask_file

            m = read_mask_file(mpath) > 0
            if transform is not None:
                if m.shape != (transform.orig_h, transform.orig_w):
                    import cv2 as _cv2

                    m = _cv2.resize(m.astype(np.uint8), (transform.orig_w, transform.orig_h), interpolation=_cv2.INTER_NEAREST) > 0
                m = transform.forward_array(m.astype(np.float32), interpolation="area") >= 0.5
            elif m.shape != (h, w):
                m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
            mask[m] = value
            continue
        if le.shape in ("circle", "point"):
            c = np.array([[g["cx"], g["cy"]]] if le.shape == "circle" else [[g["x"], g["y"]]], dtype=float)
            r = float(g["r"]) if le.shape == "circle" else POINT_RADIUS
            if transform is not None:
                c = transform.forward_points(c)
                r = transform.forward_length(r)
            # pixel centres at +0.5: a pixel is inside when its centre is
            yy, xx = np.ogrid[:h, :w]
            inside = (xx + 0.5 - c[0, 0]) ** 2 + (yy + 0.5 - c[0, 1]) ** 2 <= max(r, 0.5) ** 2
            mask[inside] = value
            continue
        if le.shape == "box":
            pts = np.array([[g["x0"], g["y0"]], [g["x1"], g["y0"]], [g["x1"], g["y1"]], [g["x0"], g["y1"]]], dtype=float)
        else:
            pts = np.asarray(g["points"], dtype=float).reshape(-1, 2)
        if transform is not None:
            pts = transform.forward_points(pts)
        # cv2 fills with integer vertices at pixel centres; shift by -0.5 and use sub-pixel bits
        poly = np.round((pts - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(mask, [poly], int(value), lineType=cv2.LINE_8, shift=4)
    return mask
