"""Fixtures of tests/evaluate: small evaluation cohorts with known properties (no training): a manifest, binormal
scores for a 'model' and a weaker 'baseline', heatmaps that hit most lesions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammolens.data.heatmap_io import save_heatmaps
from mammolens.data.transform import Transform

ORIG = 64  # original image size (pixels)
CACHE = 32  # cache size


def make_cohort(
    root: Path,
    *,
    n_patients: int = 80,
    seed: int = 0,
    mu_model: float = 2.5,
    mu_baseline: float = 1.2,
    hit_rate: float = 0.8,
    heatmaps: bool = True,
) -> dict[str, Path]:
    """Write manifest.csv, predictions.csv, baseline.csv (+ heatmaps/) under ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    vendors = ["Hologic", "GE", "Siemens"]
    for p in range(n_patients):
        pid = f"P{p:03d}"
        sid = f"S{p:03d}"
        split = ["train", "train", "val", "test", "test"][p % 5]
        malignant_side = rng.choice(["L", "R"]) if rng.random() < 0.4 else None
        vendor = vendors[p % 3]
        density = "ABCD"[int(rng.integers(0, 4))]
        age = float(rng.integers(42, 76))
        for lat in ("L", "R"):
            for view in ("CC", "MLO"):
                iid = f"{sid}_{lat}_{view}"
                lab = int(lat == malignant_side)
                les = ""
                if lab:
                    cx, cy = float(rng.uniform(16, 48)), float(rng.uniform(16, 48))
                    les = json.dumps([{"shape": "circle", "cx": cx, "cy": cy, "r": 6.0, "pathology": "malignant"}])
                rows.append({
                    "image_id": iid, "patient_id": pid, "study_id": sid, "path": f"img/{iid}.png",
                    "laterality": lat, "view": view, "manufacturer": vendor, "age": age, "density": density,
                    "label": lab, "lesions": les, "split": split, "dataset": "fixture",
                    "outcome": "malignant" if lab else ("benign" if rng.random() < 0.1 else "normal"),
                })
    man = pd.DataFrame(rows)
    y = man["label"].to_numpy()
    model = 1 / (1 + np.exp(-(mu_model * y - mu_model / 2 + rng.normal(0, 1, len(y)))))
    base = 1 / (1 + np.exp(-(mu_baseline * y - mu_baseline / 2 + rng.normal(0, 1, len(y)))))
    tf = Transform(ORIG, ORIG, 0, ORIG, 0, ORIG, False, CACHE / ORIG, CACHE, CACHE)
    heat_paths = []
    yy, xx = np.mgrid[:CACHE, :CACHE]
    for r in man.itertuples(index=False):
        if not heatmaps:
            heat_paths.append("")
            continue
        if r.lesions and rng.random() < hit_rate:
            le = json.loads(r.lesions)[0]
            cx, cy = le["cx"] * CACHE / ORIG, le["cy"] * CACHE / ORIG
        else:
            cx, cy = rng.uniform(0, CACHE), rng.uniform(0, CACHE)
        h = np.exp(-((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) / (2 * 2.0**2)).astype(np.float32)
        p = root / "heatmaps" / f"{r.image_id}.npz"
        save_heatmaps(p, {"localization": h, "attention": h}, tf)
        heat_paths.append(str(p.relative_to(root)))
    man.to_csv(root / "manifest.csv", index=False)
    pred = man[["image_id", "patient_id", "study_id", "laterality", "view"]].copy()
    pred["score"] = model
    pred["heatmap"] = heat_paths
    pred["model"] = "attention"
    pred.to_csv(root / "predictions.csv", index=False)
    bp = man[["image_id", "patient_id", "study_id", "laterality", "view"]].copy()
    bp["score"] = base
    bp["model"] = "baseline"
    bp.to_csv(root / "baseline.csv", index=False)
    return {"manifest": root / "manifest.csv", "predictions": root / "predictions.csv", "baseline": root / "baseline.csv"}


@pytest.fixture(scope="session")
def make_eval_cohort():
    """The :func:`make_cohort` factory (a fixture: test modules are imported by importlib)."""
    return make_cohort
