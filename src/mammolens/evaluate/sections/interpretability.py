"""Report section: localisation by the heatmaps (:func:`mammolens.stats.score_localization`)
and the gallery of true positives, false negatives and false positives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.evaluate._common import EvaluationError, _d, _f


# ----------------------------------------------------------------------------- interpretability
def localisation_section(img: pd.DataFrame, *, kind: str | None, base_dir: Path | None,
                         threshold: float = 0.5) -> tuple[dict[str, Any], pd.DataFrame]:
    """Pointing-game hit rate, Dice, IoU and FROC of the heatmaps of malignant images with annotations.

    Scored by :func:`mammolens.stats.localization.score_localization` in ORIGINAL image
    geometry, as ``mammolens stats localization`` does (same inputs, same numbers); a hit is
    the heatmap's maximum falling inside an annotated malignant lesion (Zhang et al. 2018,
    "Top-down neural attention by excitation backprop"); Dice binarises ``heatmap >= threshold``.
    """
    from mammolens.data.heatmap_io import heatmap_and_lesion_mask
    from mammolens.stats.localization import score_localization

    used_kind = kind
    pos = img[(img["label"] == 1)]
    if "heatmap" not in pos.columns:
        return {"skipped": "predictions have no heatmap column"}, pd.DataFrame()
    n_no_heat = n_no_lesion = 0
    heats: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for r in pos.itertuples(index=False):
        hp = getattr(r, "heatmap", "")
        if not isinstance(hp, str) or not hp or not Path(hp).exists():
            n_no_heat += 1
            continue
        try:
            heat, mask, used_kind = heatmap_and_lesion_mask(hp, getattr(r, "lesions", ""), kind=kind, base_dir=base_dir)
        except KeyError as e:
            raise EvaluationError(str(e).strip("'\"")) from None
        except (ValueError, TypeError):  # unreadable or empty annotation: nothing to score against
            mask = None
        if mask is None:
            n_no_lesion += 1
            continue
        heats.append(heat)
        masks.append(mask)
        rows.append({"image_id": r.image_id, "score": r.score})
    if not rows:
        return {"skipped": "no malignant image with both a heatmap and an annotated lesion",
                "n_without_heatmap": n_no_heat, "n_without_lesion": n_no_lesion}, pd.DataFrame(
                    columns=["image_id", "score", "hit", "dice", "iou"])
    res = score_localization(heats, masks, threshold=threshold)
    table = pd.DataFrame([{**r, "hit": int(x["hit"]), "dice": x["dice"], "iou": x["iou"]}
                          for r, x in zip(rows, res.per_image, strict=True)],
                         columns=["image_id", "score", "hit", "dice", "iou"])
    return {
        "heatmap_kind": used_kind,
        "geometry": "original",
        "n_images": res.n_images,
        "n_without_heatmap": n_no_heat,
        "n_without_lesion": n_no_lesion,
        "hit_rate": _d(res.hit_rate),
        "dice": {"mean": _f(res.dice_mean), "median": _f(res.dice_median), "q1": _f(res.dice_q1), "q3": _f(res.dice_q3)},
        "dice_threshold": res.threshold,
        "iou_mean": _f(res.iou_mean),
        "froc": {"sensitivity_at_fps": {f"{k:g}": v for k, v in res.froc.at_fps.items()}, "cpm": res.froc.cpm,
                 "n_lesions": res.froc.n_lesions},
    }, table


def _thumbnail(row: Any, *, kind: str | None, base_dir: Path | None, size: int = 240) -> Any:
    """An overlay thumbnail (PIL image) in the original geometry: the predict overlay PNG,
    else :func:`mammolens.explain.thumbnails.overlay_thumbnail` (image + heatmap + lesions)."""
    from PIL import Image

    from mammolens.explain.thumbnails import overlay_thumbnail

    ov = getattr(row, "overlay", "")
    if isinstance(ov, str) and ov and Path(ov).exists():
        im = Image.open(ov).convert("RGB")
        im.thumbnail((size, size))
        return im
    hp = getattr(row, "heatmap", "")
    if not isinstance(hp, str) or not hp or not Path(hp).exists():
        return None
    try:
        return overlay_thumbnail(getattr(row, "path", None), hp, kind=kind, lesions=getattr(row, "lesions", ""), base_dir=base_dir, size=size)
    except KeyError as e:
        raise EvaluationError(str(e).strip("'\"")) from None


def gallery_section(img: pd.DataFrame, threshold: float, *, n: int, kind: str | None, base_dir: Path | None, out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Up to ``n`` true positives, false negatives and false positives at the operating point."""
    sel = {
        "true_positive": img[(img["label"] == 1) & (img["score"] >= threshold)].sort_values("score", ascending=False),
        "false_negative": img[(img["label"] == 1) & (img["score"] < threshold)].sort_values("score", ascending=True),
        "false_positive": img[(img["label"] == 0) & (img["score"] >= threshold)].sort_values("score", ascending=False),
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for name, d in sel.items():
        items = []
        for r in d.head(n).itertuples(index=False):
            im = _thumbnail(r, kind=kind, base_dir=base_dir)
            entry = {"image_id": r.image_id, "score": float(r.score), "label": int(r.label), "file": None,
                     "laterality": str(getattr(r, "laterality", "") or ""), "view": str(getattr(r, "view", "") or "")}
            if im is not None:
                p = out_dir / "gallery" / f"{name}_{len(items) + 1}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                im.save(p)
                entry["file"] = str(p.relative_to(out_dir.parent))
            items.append(entry)
        out[name] = items
    return out
