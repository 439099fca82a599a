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
#: the columns of the rows written while scoring (the roll-ups come when all are scored)
STREAM_COLUMNS = [c for c in PRED_COLUMNS if c not in ("breast_score", "exam_score")]
REGION_COLUMNS = ["image_id", "rank", "score", "x0", "y0", "x1", "y1", "peak_x", "peak_y", "kind"]


@dataclass
class ImageResult:
    """The model's output for one image.

    ``score`` (probability) always; ``logit`` and ``maps`` (heatmaps in cache geometry)
    from :meth:`mammolens.predict.Predictor.predict_arrays`; ``breast_score``,
    ``exam_score`` and the ``heatmap`` file once the image is a row of a predictions
    table (the service's scorer hands these on).
    """

    score: float
    logit: float = math.nan
    maps: dict[str, Any] = field(default_factory=dict)
    breast_score: float | None = None
    exam_score: float | None = None
    heatmap: Path | None = None


def add_rollups(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``breast_score`` (max over the breast's images) and ``exam_score`` (max over the exam).

    The roll-up rule is :func:`mammolens.stats.levels.add_level_scores`; here the key columns
    are written as text (a plain file has no laterality: ``""``) and the columns ordered.
    """
    from mammolens.stats.levels import add_level_scores

    df = df.copy()
    if df.empty:
        df["breast_score"] = pd.Series(dtype=float)
        df["exam_score"] = pd.Series(dtype=float)
        return df[[c for c in PRED_COLUMNS if c in df.columns] + [c for c in df.columns if c not in PRED_COLUMNS]]
    for c in BREAST_KEY:
        df[c] = df[c].fillna("").astype(str)
    df = add_level_scores(df, score="score", how="max")
    return df[[c for c in PRED_COLUMNS if c in df.columns] + [c for c in df.columns if c not in PRED_COLUMNS]]


def _level_rows(df: pd.DataFrame, level: str) -> pd.DataFrame:
    from mammolens.stats.levels import aggregate_scores, level_keys

    col = f"{level}_score"
    if df.empty:
        return pd.DataFrame(columns=[*level_keys(level), col, "n_images"])
    out = aggregate_scores(df, level=level, score="score", truth=None, how="max", sort=True, missing_keys="group")
    return out.rename(columns={"score": col})


def breast_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per breast: key, ``breast_score`` (max over its images) and ``n_images``."""
    return _level_rows(df, "breast")


def exam_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per exam: key, ``exam_score`` (max over its images) and ``n_images``."""
    return _level_rows(df, "exam")
