"""The predictions table: its columns, the breast/exam roll-ups and the per-level tables.

The format ``predict`` writes and ``evaluate``, ``stats`` and the service read (see
:mod:`mammolens.predict.api` for the files). torch-free: importing it is cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.data.manifest import BREAST_KEY

QC_STAGE = "predict"
PRED_COLUMNS = [
    "image_id",
    "patient_id",
    "study_id",
    "laterality",
    "view",
    "score",
    "breast_score",
    "exam_score",
    "heatmap",
    "overlay",
    "model",
    "path",
    "logit",
]
#: the columns a model with the benign output (``model.benign_output``) adds; a model
#: without it writes none of them (not NaN columns: the table keeps its usual shape)
BENIGN_COLUMNS = ["benign_score", "breast_benign_score", "exam_benign_score", "benign_logit"]
#: the columns of the rows written while scoring (the roll-ups come when all are scored)
STREAM_COLUMNS = [c for c in PRED_COLUMNS if c not in ("breast_score", "exam_score")]
BENIGN_STREAM_COLUMNS = ["benign_score", "benign_logit"]


def stream_columns(benign: bool) -> list[str]:
    """The columns of the streamed rows of a model with (or without) the benign output."""
    return STREAM_COLUMNS + (BENIGN_STREAM_COLUMNS if benign else [])


#: the GMIC / NYU-style per-exam table (``PREDICTIONS_exam_gmic.csv``): one row per exam,
#: each breast's benign and malignant probabilities
GMIC_COLUMNS = ["patient_id", "study_id", "left_benign", "left_malignant", "right_benign", "right_malignant"]
REGION_COLUMNS = ["image_id", "rank", "score", "x0", "y0", "x1", "y1", "peak_x", "peak_y", "kind"]


@dataclass
class ImageResult:
    """The model's output for one image.

    ``score`` (probability) always; ``logit`` and ``maps`` (heatmaps in cache geometry)
    from :meth:`mammolens.predict.Predictor.predict_arrays`, and ``benign_score`` /
    ``benign_logit`` from a model with the benign output (else ``None`` / NaN); ``breast_score``,
    ``exam_score`` and the ``heatmap`` file once the image is a row of a predictions
    table (the service's scorer hands these on).
    """

    score: float
    logit: float = math.nan
    maps: dict[str, Any] = field(default_factory=dict)
    breast_score: float | None = None
    exam_score: float | None = None
    heatmap: Path | None = None
    benign_score: float | None = None
    benign_logit: float = math.nan


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in PRED_COLUMNS if c in df.columns] + [c for c in BENIGN_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def add_rollups(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``breast_score`` (max over the breast's images) and ``exam_score`` (max over the exam).

    With a ``benign_score`` column (a model with the benign output), also
    ``breast_benign_score`` and ``exam_benign_score`` by the same rule. The roll-up rule
    is :func:`mammolens.stats.levels.add_level_scores`; here the key columns are written as
    text (a plain file has no laterality: ``""``) and the columns ordered.
    """
    from mammolens.stats.levels import add_level_scores

    df = df.copy()
    benign = "benign_score" in df.columns
    if df.empty:
        for c in ("breast_score", "exam_score") + (("breast_benign_score", "exam_benign_score") if benign else ()):
            df[c] = pd.Series(dtype=float)
        return _ordered(df)
    for c in BREAST_KEY:
        df[c] = df[c].fillna("").astype(str)
    df = add_level_scores(df, score="score", how="max")
    if benign:
        df = add_level_scores(df, score="benign_score", how="max", prefix="benign_")
    return _ordered(df)


def _level_rows(df: pd.DataFrame, level: str) -> pd.DataFrame:
    from mammolens.stats.levels import aggregate_scores, level_keys

    col = f"{level}_score"
    benign = "benign_score" in df.columns
    bcol = f"{level}_benign_score"
    if df.empty:
        return pd.DataFrame(columns=[*level_keys(level), col, *([bcol] if benign else []), "n_images"])
    scores = ["score", "benign_score"] if benign else ["score"]
    d = df.assign(benign_score=pd.to_numeric(df["benign_score"], errors="coerce")) if benign else df
    out = aggregate_scores(d, level=level, score=scores, truth=None, how="max", sort=True, missing_keys="group")
    out = out.rename(columns={"score": col, "benign_score": bcol})
    return out[[*level_keys(level), col, *([bcol] if benign else []), "n_images"]]


def breast_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per breast: key, ``breast_score`` (max over its images), with the benign
    output ``breast_benign_score`` (likewise), and ``n_images``."""
    return _level_rows(df, "breast")


def exam_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per exam: key, ``exam_score`` (max over its images), with the benign output
    ``exam_benign_score`` (likewise), and ``n_images``."""
    return _level_rows(df, "exam")


def gmic_exam_table(df: pd.DataFrame) -> pd.DataFrame:
    """The GMIC / NYU-style exam table: ``patient_id, study_id, left_benign, left_malignant,
    right_benign, right_malignant`` (each breast's probabilities: the max over its views,
    :func:`breast_table`). A breast without images is empty (NaN); images of unknown
    laterality are left out. Needs the benign output (a ``benign_score`` column).

    Raises
    ------
    ValueError
        ``df`` has no ``benign_score`` column.
    """
    if "benign_score" not in df.columns:
        raise ValueError("the GMIC-style table needs benign scores (a model trained with model.benign_output)")
    b = breast_table(df)
    if b.empty:
        return pd.DataFrame(columns=GMIC_COLUMNS)
    b = b[b["laterality"].astype(str).str.upper().isin(["L", "R"])]
    exams = b[["patient_id", "study_id"]].drop_duplicates().reset_index(drop=True)
    out = exams.copy()
    for lat, side in (("L", "left"), ("R", "right")):
        s = b[b["laterality"].astype(str).str.upper() == lat].set_index(["patient_id", "study_id"])
        idx = pd.MultiIndex.from_frame(exams)
        out[f"{side}_benign"] = s["breast_benign_score"].reindex(idx).to_numpy(dtype=float)
        out[f"{side}_malignant"] = s["breast_score"].reindex(idx).to_numpy(dtype=float)
    return out[GMIC_COLUMNS]
