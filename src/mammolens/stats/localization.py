"""Localisation metrics for heatmaps: pointing game, Dice/IoU and FROC.

Conventions: a heatmap and a lesion mask are 2-D arrays of the same shape (row, col);
non-zero mask pixels are lesion. Points are ``(row, col)``; circles ``(row, col, radius)``
in pixels.

* Pointing game: a hit when the heatmap's maximum lies inside the lesion. With tied
  maxima the first in row-major order counts (``numpy.argmax``).
* Dice / IoU: the heatmap is binarised as ``heatmap >= threshold``. Two empty masks give 1.
* One scorer, :func:`score_localization`, gives all of the above for a set of images;
  ``mammolens stats localization`` and ``mammolens evaluate`` both call it, with heatmaps
  and masks in the ORIGINAL image geometry, so both report the same numbers.
* FROC: candidates are the heatmap's local maxima (``maximum_filter`` with
  ``min_distance``, values > ``min_value``), or given directly as ``(row, col, score)``.
  A candidate is a true positive when it falls inside a lesion (mask component or
  circle); each lesion counts once, at its highest-scoring hit; further hits on an
  already-found lesion are ignored (neither TP nor FP); all other candidates are false
  positives. Sensitivity (lesion localisation fraction) is plotted against false
  positives per image over all images given (normal ones included).

References
----------
.. [1] Zhang J, Bargal SA, Lin Z, et al. Top-down neural attention by excitation
   backprop. IJCV 2018;126:1084-1102 (pointing game).
.. [2] Chakraborty DP. Observer Performance Methods for Diagnostic Imaging. CRC 2017 (FROC).
.. [3] Niemeijer M, et al. On combining computer-aided detection systems. IEEE TMI
   2011;30:215-223 (competition performance metric: mean sensitivity at 1/8-8 FPs/image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from mammolens.stats._validate import StatsInputError
from mammolens.stats.operating import Proportion, proportion_ci

DEFAULT_FPS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _pair(heatmap: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(heatmap, dtype=np.float64)
    m = np.asarray(mask)
    if h.ndim != 2 or m.ndim != 2:
        raise StatsInputError(f"heatmap and mask must be 2-D (got {h.shape} and {m.shape})")
    if h.shape != m.shape:
        raise StatsInputError(f"heatmap shape {h.shape} differs from mask shape {m.shape}")
    if not np.isfinite(h).all():
        raise StatsInputError("heatmap has non-finite values")
    return h, m != 0


def pointing_hit(heatmap: Any, mask: Any, *, tolerance: float = 0.0) -> bool:
    """True when the heatmap's maximum lies inside the lesion mask.

    Parameters
    ----------
    heatmap, mask
        2-D arrays of the same shape; non-zero mask pixels are lesion.
    tolerance
        Distance in pixels within which a maximum outside the lesion still counts as a
        hit (Zhang et al. [1]_ use 15 px). 0 (default) is the strict criterion. Useful when
        the map is coarser than the lesions (one cell of a stride-32 feature map).
    """
    h, m = _pair(heatmap, mask)
    if not m.any():
        raise StatsInputError("mask has no lesion pixels: the pointing game needs a lesion")
    if tolerance < 0 or not np.isfinite(tolerance):
        raise StatsInputError(f"tolerance must be a finite distance >= 0 pixels, got {tolerance!r}")
    i = int(np.argmax(h))
    if m.flat[i]:
        return True
    if tolerance == 0:
        return False
    y, x = np.unravel_index(i, h.shape)
    yy, xx = np.nonzero(m)
    return bool(np.min((yy - y) ** 2 + (xx - x) ** 2) <= tolerance**2)


def hit_rate(
    heatmaps: Sequence[Any], masks: Sequence[Any], *, tolerance: float = 0.0, ci: str = "wilson", alpha: float = 0.05
) -> Proportion:
    """Share of images whose heatmap maximum hits the lesion (within ``tolerance`` px), with a CI."""
    if len(heatmaps) != len(masks):
        raise StatsInputError(f"{len(heatmaps)} heatmaps but {len(masks)} masks")
    k = sum(pointing_hit(h, m, tolerance=tolerance) for h, m in zip(heatmaps, masks, strict=True))
    return proportion_ci(k, len(heatmaps), method=ci, alpha=alpha)


def dice(heatmap: Any, mask: Any, *, threshold: float) -> float:
    """Dice coefficient between ``heatmap >= threshold`` and the mask."""
    h, m = _pair(heatmap, mask)
    p = h >= threshold
    s = p.sum() + m.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(p, m).sum() / s)


def iou(heatmap: Any, mask: Any, *, threshold: float) -> float:
    """Intersection over union (Jaccard) between ``heatmap >= threshold`` and the mask."""
    h, m = _pair(heatmap, mask)
    p = h >= threshold
    u = np.logical_or(p, m).sum()
    return 1.0 if u == 0 else float(np.logical_and(p, m).sum() / u)


def choose_threshold(
    heatmaps: Sequence[Any],
    masks: Sequence[Any],
    *,
    metric: str = "dice",
    candidates: Sequence[float] | None = None,
) -> float:
    """The threshold maximising the mean Dice (or IoU) over a validation set.

    ``candidates`` default to 0.05, 0.10, ..., 0.95 (heatmaps are in [0, 1]). Choose it
    on validation images, then report Dice on test images at that threshold.
    """
    if metric not in ("dice", "iou"):
        raise StatsInputError(f"metric must be 'dice' or 'iou', got {metric!r}")
    if not len(heatmaps) or len(heatmaps) != len(masks):
        raise StatsInputError("choose_threshold needs equally many (>0) heatmaps and masks")
    cands = np.asarray(candidates if candidates is not None else np.round(np.arange(0.05, 1.0, 0.05), 2), dtype=float)
    fn = dice if metric == "dice" else iou
    means = [np.mean([fn(h, m, threshold=t) for h, m in zip(heatmaps, masks, strict=True)]) for t in cands]
    return float(cands[int(np.argmax(means))])


def local_maxima(heatmap: Any, *, min_distance: int = 5, min_value: float = 0.0, max_candidates: int = 50) -> np.ndarray:
    """Local maxima of a heatmap as an array of ``(row, col, score)``, best first."""
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2:
        raise StatsInputError(f"heatmap must be 2-D, got shape {h.shape}")
    size = 2 * int(min_distance) + 1
    peaks = (h == ndi.maximum_filter(h, size=size, mode="nearest")) & (h > min_value)
    # keep one pixel per flat plateau
    lab, n = ndi.label(peaks)
    if n == 0:
        return np.empty((0, 3))
    idx = ndi.labeled_comprehension(h, lab, np.arange(1, n + 1), lambda v, p: p[0], np.int64, -1, pass_positions=True)
    rows, cols = np.unravel_index(idx, h.shape)
    out = np.column_stack([rows, cols, h[rows, cols]]).astype(float)
    out = out[np.argsort(-out[:, 2], kind="mergesort")]
    return out[:max_candidates]


@dataclass(frozen=True)
class FROCResult:
    """FROC curve and sensitivities at chosen false-positive rates per image."""

    fps_per_image: np.ndarray  # curve x
    sensitivity: np.ndarray  # curve y
    thresholds: np.ndarray
    at_fps: dict[float, float]
    cpm: float
    n_images: int
    n_lesions: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fps_per_image"] = self.fps_per_image.tolist()
        d["sensitivity"] = self.sensitivity.tolist()
        d["thresholds"] = self.thresholds.tolist()
        d["at_fps"] = {f"{k:g}": v for k, v in self.at_fps.items()}
        return d


def _lesion_regions(lesion: Any) -> list[Any]:
    """One image's lesions as a list of boolean masks or (row, col, r) circles."""
    if lesion is None:
        return []
    if isinstance(lesion, np.ndarray) and lesion.ndim == 2:
        lab, n = ndi.label(lesion != 0)
        return [lab == i for i in range(1, n + 1)]
    out = []
    for le in lesion:
        if isinstance(le, np.ndarray) and le.ndim == 2:
            out.append(le != 0)
        else:
            t = tuple(float(v) for v in le)
            if len(t) != 3:
                raise StatsInputError(f"a lesion must be a 2-D mask or (row, col, radius), got {le!r}")
            out.append(t)
    return out


def _inside(region: Any, r: float, c: float) -> bool:
    if isinstance(region, tuple):
        return (r - region[0]) ** 2 + (c - region[1]) ** 2 <= region[2] ** 2
    ri, ci = int(round(r)), int(round(c))
    return 0 <= ri < region.shape[0] and 0 <= ci < region.shape[1] and bool(region[ri, ci])


def froc(
    heatmaps_or_candidates: Sequence[Any],
    lesions: Sequence[Any],
    *,
    inputs: str = "heatmaps",
    fps: Sequence[float] = DEFAULT_FPS,
    min_distance: int = 5,
    min_value: float = 0.0,
    max_candidates: int = 50,
) -> FROCResult:
    """Free-response ROC from heatmaps (or candidate lists) and lesion annotations.

    Parameters
    ----------
    heatmaps_or_candidates : list
        Per image: a 2-D heatmap (candidates are its local maxima) or, with
        ``inputs="candidates"``, an array of ``(row, col, score)`` candidates.
    lesions : list
        Per image: a 2-D mask (each connected component is one lesion), a list of masks
        and/or ``(row, col, radius)`` circles, or ``None``/``[]`` for a normal image.
    inputs : {"heatmaps", "candidates"}
        What ``heatmaps_or_candidates`` holds.
    fps : list of float
        False positives per image at which to report sensitivity (the highest
        sensitivity reached with at most that many FPs per image).

    Returns
    -------
    FROCResult
        Curve, ``at_fps`` and ``cpm`` (mean of ``at_fps``).
    """
    if inputs not in ("heatmaps", "candidates"):
        raise StatsInputError(f"inputs must be 'heatmaps' or 'candidates', got {inputs!r}")
    if len(heatmaps_or_candidates) != len(lesions):
        raise StatsInputError(f"{len(heatmaps_or_candidates)} images of candidates but {len(lesions)} of lesions")
    n_img = len(lesions)
    if n_img == 0:
        raise StatsInputError("froc: no images")
    events: list[tuple[float, int, int]] = []  # (score, is_tp, lesion global id or -1)
    n_les = 0
    for hm, les in zip(heatmaps_or_candidates, lesions, strict=True):
        arr = np.asarray(hm, dtype=float)
        if inputs == "heatmaps":
            cands = local_maxima(arr, min_distance=min_distance, min_value=min_value, max_candidates=max_candidates)
        else:
            if arr.size and (arr.ndim != 2 or arr.shape[1] != 3):
                raise StatsInputError(f"candidates must be (n, 3) arrays of (row, col, score), got shape {arr.shape}")
            cands = arr.reshape(-1, 3)
        regions = _lesion_regions(les)
        found: set[int] = set()
        for r, c, sc in cands[np.argsort(-cands[:, 2], kind="mergesort")]:
            hit = next((i for i, reg in enumerate(regions) if _inside(reg, r, c)), None)
            if hit is None:
                events.append((float(sc), 0, -1))
            elif hit not in found:
                found.add(hit)
                events.append((float(sc), 1, n_les + hit))
        n_les += len(regions)
    if n_les == 0:
        raise StatsInputError("froc: no lesions among the images")
    ev = np.array(sorted(events, key=lambda e: -e[0]), dtype=float).reshape(-1, 3)
    tp = np.cumsum(ev[:, 1])
    fp = np.cumsum(1 - ev[:, 1])
    # collapse tied scores: take the last point of each tie run
    if ev.size:
        last = np.r_[np.flatnonzero(np.diff(ev[:, 0]) != 0), len(ev) - 1]
    else:
        last = np.array([], dtype=int)
    x = np.r_[0.0, fp[last] / n_img]
    y = np.r_[0.0, tp[last] / n_les]
    thr = np.r_[np.inf, ev[last, 0]] if ev.size else np.array([np.inf])
    at = {}
    for f in fps:
        ok = x <= float(f) + 1e-12
        at[float(f)] = float(y[ok].max()) if ok.any() else 0.0
    cpm = float(np.mean(list(at.values()))) if at else float("nan")
    return FROCResult(x, y, thr, at, cpm, n_img, n_les)


@dataclass(frozen=True)
class LocalizationResult:
    """Localisation of lesions by heatmaps over a set of images (:func:`score_localization`)."""

    n_images: int
    threshold: float
    tolerance: float
    hit_rate: Proportion
    dice_mean: float
    dice_median: float
    dice_q1: float
    dice_q3: float
    iou_mean: float
    froc: FROCResult
    per_image: list[dict[str, Any]]  # hit (bool), dice, iou, in input order

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images, "threshold": self.threshold, "tolerance": self.tolerance,
            "hit_rate": self.hit_rate.to_dict(),
            "dice": {"mean": self.dice_mean, "median": self.dice_median, "q1": self.dice_q1, "q3": self.dice_q3},
            "iou_mean": self.iou_mean, "froc": self.froc.to_dict(), "per_image": list(self.per_image),
        }


def score_localization(
    heatmaps: Sequence[Any],
    masks: Sequence[Any],
    *,
    threshold: float = 0.5,
    tolerance: float = 0.0,
    fps: Sequence[float] = DEFAULT_FPS,
    ci: str = "wilson",
    alpha: float = 0.05,
) -> LocalizationResult:
    """Pointing game, Dice, IoU and FROC of heatmaps against lesion masks, image by image.

    Parameters
    ----------
    heatmaps, masks : list of 2-D arrays
        Per image, a heatmap in [0, 1] and its lesion mask, in the same geometry. Callers in
        mammolens pass the ORIGINAL image geometry (heatmaps mapped back with their
        transform, lesions rasterised on the original pixel grid), so numbers do not depend
        on the cache size the model ran at.
    threshold : float
        Dice / IoU binarise ``heatmap >= threshold``. The default 0.5 is the decision
        threshold of the localisation map (a per-pixel probability) and half the maximum
        of the attention and Grad-CAM maps (saved normalised to a maximum of 1).
    tolerance : float
        Pointing-game tolerance in pixels (:func:`pointing_hit`).
    fps : list of float
        False positives per image at which FROC sensitivity is reported.

    Returns
    -------
    LocalizationResult
    """
    if len(heatmaps) != len(masks):
        raise StatsInputError(f"{len(heatmaps)} heatmaps but {len(masks)} masks")
    if not len(heatmaps):
        raise StatsInputError("score_localization: no images")
    if not np.isfinite(threshold):
        raise StatsInputError(f"threshold must be finite, got {threshold!r}")
    per_image = [
        {"hit": pointing_hit(h, m, tolerance=tolerance), "dice": dice(h, m, threshold=threshold),
         "iou": iou(h, m, threshold=threshold)}
        for h, m in zip(heatmaps, masks, strict=True)
    ]
    d = np.array([r["dice"] for r in per_image], dtype=float)
    q1, med, q3 = (float(v) for v in np.quantile(d, [0.25, 0.5, 0.75]))
    return LocalizationResult(
        n_images=len(per_image), threshold=float(threshold), tolerance=float(tolerance),
        hit_rate=proportion_ci(sum(r["hit"] for r in per_image), len(per_image), method=ci, alpha=alpha),
        dice_mean=float(d.mean()), dice_median=med, dice_q1=q1, dice_q3=q3,
        iou_mean=float(np.mean([r["iou"] for r in per_image])),
        froc=froc(heatmaps, masks, fps=fps), per_image=per_image,
    )
