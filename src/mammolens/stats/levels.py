"""Roll image-level scores up to breasts and exams.

A breast is ``(patient_id, study_id, laterality)`` and an exam ``(patient_id, study_id)``
(:data:`mammolens.data.manifest.BREAST_KEY` / ``EXAM_KEY``). The score of a breast or exam
is the maximum (default) or the mean of its images' scores; its truth is the maximum of
its images' truths (an exam is malignant when any of its images is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mammolens.data.manifest import BREAST_KEY, EXAM_KEY
from mammolens.stats._validate import StatsInputError, check_choice, check_columns

LEVELS = ("image", "breast", "exam")


def level_keys(level: str) -> list[str]:
    """The key columns of a level (``image`` -> ``["image_id"]``)."""
    check_choice(level, LEVELS, name="level")
    return {"image": ["image_id"], "breast": list(BREAST_KEY), "exam": list(EXAM_KEY)}[level]


def aggregate_scores(
    df: pd.DataFrame,
    *,
    level: str = "exam",
    score: str | Sequence[str] = "score",
    truth: str | None = "label",
    how: str = "max",
    keys: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    sort: bool = False,
    missing_keys: str = "raise",
) -> pd.DataFrame:
    """Aggregate a per-image table to one row per breast or exam.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per image with the key columns, the score column(s) and (optionally) truth.
    level : {"image", "breast", "exam"}
        ``image`` returns the rows unchanged (after validation).
    score : str or list of str
        Score column(s) to aggregate.
    truth : str or None
        Truth column, rolled up by ``max``; rows with missing truth are kept but an
        aggregate is missing only when all its images are.
    how : {"max", "mean"}
        How image scores combine.
    keys : list of str, optional
        Override the level's key columns.
    keep : list of str
        Extra columns carried along (first value per group, e.g. ``age``, ``manufacturer``).
    sort : bool
        Rows sorted by the key columns (else in order of first appearance).
    missing_keys : {"raise", "group"}
        A row with a missing key raises :class:`StatsInputError`, or its missing values form a
        group of their own (a predictions table of plain files has no laterality).

    Returns
    -------
    pandas.DataFrame
        Key columns, aggregated score(s), truth, extra columns and ``n_images``.
    """
    check_choice(how, ("max", "mean"), name="how")
    check_choice(missing_keys, ("raise", "group"), name="missing_keys")
    scores = [score] if isinstance(score, str) else list(score)
    grp = list(keys) if keys is not None else level_keys(level)
    cols = grp + scores + ([truth] if truth else []) + list(keep)
    check_columns(df, cols, what="aggregate_scores")
    for c in scores:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise StatsInputError(f"column {c!r}: scores must be numeric")
    if level == "image" and keys is None:
        return df[list(dict.fromkeys(cols))].reset_index(drop=True)
    missing_key = df[grp].isna().any(axis=1)
    if missing_key.any() and missing_keys == "raise":
        raise StatsInputError(f"{int(missing_key.sum())} row(s) with a missing key ({', '.join(grp)})")
    agg: dict[str, Any] = {c: how for c in scores}
    if truth:
        agg[truth] = "max"
    for c in keep:
        agg[c] = "first"
    g = df.groupby(grp, sort=sort, dropna=False)
    out = g.agg(agg)
    out["n_images"] = g.size()
    out = out.reset_index()
    if truth and pd.api.types.is_float_dtype(out[truth]) and out[truth].dropna().isin([0, 1]).all():
        out[truth] = out[truth].astype("Int64")
    return out


def add_level_scores(df: pd.DataFrame, *, score: str = "score", how: str = "max", prefix: str = "") -> pd.DataFrame:
    """Add ``breast_{prefix}score`` and ``exam_{prefix}score`` columns (the predictions
    table's layout: ``breast_score``, ``exam_score``; ``prefix="benign_"`` gives
    ``breast_benign_score``, ``exam_benign_score`` for a second output).

    Every image row gets the score of its breast and of its exam (missing key values form
    a group of their own, as in :func:`aggregate_scores` with ``missing_keys="group"``).
    """
    check_choice(how, ("max", "mean"), name="how")
    check_columns(df, [*BREAST_KEY, score], what="add_level_scores")
    out = df.copy()
    out[f"breast_{prefix}score"] = df.groupby(list(BREAST_KEY), sort=False, dropna=False)[score].transform(how)
    out[f"exam_{prefix}score"] = df.groupby(list(EXAM_KEY), sort=False, dropna=False)[score].transform(how)
    return out


def roll_up(scores: Sequence[tuple[str, float]], *, how: str = "max") -> tuple[dict[str, float], float]:
    """Breast scores and the exam score of one exam from ``(laterality, image score)`` pairs.

    The same rule as :func:`aggregate_scores` for callers that hold one exam's scores in
    hand (the service's worker) rather than a table.

    Examples
    --------
    >>> roll_up([("L", 0.2), ("L", 0.7), ("R", 0.1)])
    ({'L': 0.7, 'R': 0.1}, 0.7)
    """
    check_choice(how, ("max", "mean"), name="how")
    if not scores:
        raise StatsInputError("roll_up: no image scores")
    by: dict[str, list[float]] = {}
    for lat, s in scores:
        by.setdefault(lat, []).append(float(s))
    f = max if how == "max" else (lambda v: sum(v) / len(v))
    breasts = {lat: f(v) for lat, v in by.items()}
    return breasts, f(list(breasts.values())) if how == "max" else f([s for _, s in scores])


__all__ = ["LEVELS", "add_level_scores", "aggregate_scores", "level_keys", "roll_up"]


def contralateral_values(df: pd.DataFrame, *, value: str = "logit") -> pd.Series:
    """Per image, the mean ``value`` of the other breast's images of the same exam and view.

    Radiologists read a breast against the other one: an asymmetry is suspicious, a
    pattern both breasts share is usually not. This pairs each image with the same view
    of the contralateral breast (``patient_id, study_id, view``, the other
    ``laterality``); ``NaN`` where the exam has no such image.

    Returns
    -------
    pandas.Series
        Indexed like ``df``.
    """
    check_columns(df, [*EXAM_KEY, "laterality", "view", value], what="predictions")
    key = [*EXAM_KEY, "view"]
    lat = df["laterality"].astype(str).str.upper()
    means = df.assign(_lat=lat).groupby([*key, "_lat"], dropna=False)[value].mean()
    other = lat.map({"L": "R", "R": "L"})
    idx = pd.MultiIndex.from_frame(df[key].assign(_lat=other))
    return pd.Series(means.reindex(idx).to_numpy(dtype=float), index=df.index, name=f"contralateral_{value}")

