"""A toy cohort of small PNG "mammograms" for tests, benchmarks and quick experiments.

Each patient has one exam with a left and a right CC view. The breast is a half ellipse
of smooth noisy tissue against the chest wall (left breast: chest wall on the left of the
image, right breast on the right, as displayed in screening). A malignant breast carries
a bright round lesion, annotated as a malignant ``circle`` in original pixel coordinates;
a share of the annotations can be withheld (``mask_fraction``) to exercise weak
supervision. With ``benign_fraction`` a share of the other breasts carries a benign finding
(a sharp-edged flat disc, unlike the cancers' soft bright blob), annotated as a benign
``circle`` with ``outcome`` ``benign``. This is far simpler than :mod:`mammolens.data.synthetic` (the DICOM cohort)
and is meant to be learnable by the ``tiny`` model in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def toy_image(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    laterality: str,
    lesion: bool,
) -> tuple[np.ndarray, dict | None]:
    """One ``(H, W)`` float image in [0, 1] and its lesion (or ``None``)."""
    import cv2

    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cy = h / 2 + rng.uniform(-0.05, 0.05) * h
    ry = h * rng.uniform(0.40, 0.47)
    rx = w * rng.uniform(0.65, 0.85)
    x_from_wall = xx if laterality == "L" else (w - 1 - xx)
    breast = ((x_from_wall / rx) ** 2 + ((yy - cy) / ry) ** 2) <= 1.0
    noise = rng.normal(0, 1, (h // 4 + 1, w // 4 + 1)).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    tissue = 0.45 + 0.08 * noise - 0.15 * (x_from_wall / rx)
    img = np.where(breast, np.clip(tissue, 0.15, 0.85), 0.0).astype(np.float32)
    le = None
    if lesion:
        r = min(h, w) * rng.uniform(0.07, 0.10)
        for _ in range(100):
            lx = rng.uniform(0.15, 0.7) * rx
            ly = cy + rng.uniform(-0.6, 0.6) * ry
            if ((lx / rx) ** 2 + ((ly - cy) / ry) ** 2) < 0.55:
                break
        px = lx if laterality == "L" else (w - 1 - lx)
        d2 = (xx + 0.5 - px) ** 2 + (yy + 0.5 - ly) ** 2
        img = np.where(breast, np.clip(img + 0.45 * np.exp(-d2 / (2 * (0.6 * r) ** 2)), 0, 1), img).astype(np.float32)
        le = {"shape": "circle", "cx": round(float(px), 2), "cy": round(float(ly), 2), "r": round(float(r), 2), "pathology": "malignant", "kind": "mass"}
    return img, le


def _add_benign(img: np.ndarray, rng: np.random.Generator, *, laterality: str) -> tuple[np.ndarray, dict]:
    """Put a benign-looking finding (a sharp-edged flat disc) into the breast of ``img``."""
    h, w = img.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    breast = img > 0
    ys, xs = np.nonzero(breast)
    r = min(h, w) * rng.uniform(0.06, 0.08)
    for _ in range(100):  # a centre well inside the breast
        k = int(rng.integers(len(ys)))
        cy, cx = float(ys[k]), float(xs[k])
        x_from_wall = cx if laterality == "L" else (w - 1 - cx)
        if x_from_wall > 2 * r and r < cy < h - r and breast[max(0, int(cy - r)) : int(cy + r), max(0, int(cx - r)) : int(cx + r)].all():
            break
    disc = ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) <= r * r
    out = np.where(disc & breast, np.clip(img + 0.3, 0, 1), img).astype(np.float32)
    le = {"shape": "circle", "cx": round(cx, 2), "cy": round(cy, 2), "r": round(float(r), 2),
          "pathology": "benign", "kind": "mass"}
    return out, le


def make_toy_cohort(
    out: str | Path,
    *,
    n_patients: int = 24,
    size: tuple[int, int] = (160, 128),
    prevalence: float = 0.4,
    mask_fraction: float = 0.5,
    splits: tuple[float, float, float] = (0.5, 0.25, 0.25),
    seed: int = 0,
    benign_fraction: float = 0.0,
) -> Path:
    """Write ``OUT/images/*.png`` and ``OUT/manifest.csv``; return the manifest path.

    Splits are assigned by patient (no leakage) and stratified by outcome, so every split
    has both classes whenever ``n_patients`` allows. ``benign_fraction``: the share of
    the patients without cancer given a benign finding in one breast (drawn from a
    generator of its own: the rest of the cohort is the same as without them).
    """
    import cv2

    from mammolens.data.manifest import write_manifest

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_pos = max(1, int(round(prevalence * n_patients)))
    pos_patients = set(rng.permutation(n_patients)[:n_pos].tolist())
    # stratified patient split
    split_of: dict[int, str] = {}
    for group in (sorted(pos_patients), sorted(set(range(n_patients)) - pos_patients)):
        g = list(rng.permutation(group))
        n = len(g)
        n_tr = int(round(splits[0] * n))
        n_va = int(round(splits[1] * n))
        for i, p in enumerate(g):
            split_of[int(p)] = "train" if i < n_tr else "val" if i < n_tr + n_va else "test"
    brng = np.random.default_rng([seed, 1])
    benign_side: dict[int, str] = {}
    if benign_fraction > 0:
        neg = [p for p in range(n_patients) if p not in pos_patients]
        # spread over the splits alike: every split gets benign and normal breasts
        for sp in ("train", "val", "test"):
            grp = [p for p in neg if split_of[p] == sp]
            for p in brng.permutation(grp)[: int(round(benign_fraction * len(grp)))].tolist():
                benign_side[int(p)] = ("L", "R")[int(brng.integers(2))]
    rows = []
    for p in range(n_patients):
        pid = f"P{p:04d}"
        sick_side = ("L", "R")[int(rng.integers(2))] if p in pos_patients else ""
        for lat in ("L", "R"):
            iid = f"{pid}_{lat}_CC"
            lesion = lat == sick_side
            img, le = toy_image(rng, size, laterality=lat, lesion=lesion)
            ben = None
            if benign_side.get(p) == lat:
                img, ben = _add_benign(img, brng, laterality=lat)
            f = out / "images" / f"{iid}.png"
            cv2.imwrite(str(f), np.round(img * 255).astype(np.uint8))
            lesions = [le] if (le is not None and rng.uniform() < mask_fraction) else []
            if ben is not None:
                lesions.append(ben)
            rows.append(
                {
                    "image_id": iid,
                    "patient_id": pid,
                    "study_id": f"{pid}_S1",
                    "path": f"images/{iid}.png",
                    "laterality": lat,
                    "view": "CC",
                    "manufacturer": "",
                    "age": float(rng.integers(45, 75)),
                    "density": "",
                    "label": int(lesion),
                    "lesions": json.dumps(lesions) if lesions else "",
                    "split": split_of[p],
                    "outcome": "malignant" if lesion else ("benign" if ben is not None else "normal"),
                }
            )
    return write_manifest(pd.DataFrame(rows), out / "manifest.csv")


def make_toy_cache(manifest: str | Path, cache_dir: str | Path, *, size: tuple[int, int] = (128, 96)):  # -> Cache
    """Preprocess a toy manifest into a cache (in process, quietly)."""
    from mammolens.data.preprocess import PreprocessSettings, preprocess_manifest

    res = preprocess_manifest(manifest, cache_dir, PreprocessSettings(size=size), workers=1, progress=False,
                              isolate=False)  # self-made files: no decoder to survive
    return res.cache
