"""Every stage rolls images up to breasts and exams by the one rule of mammolens.stats.levels.

The predictions table (predict), the evaluation's level tables (evaluate), the ingest
summary's labels (data) and the service's worker all call it; these tests hold them to
the same answers on the same images.
"""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from mammolens.stats.levels import add_level_scores, aggregate_scores, roll_up


def _images(seed: int = 0, n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "image_id": [f"i{k}" for k in range(n)],
        "patient_id": rng.choice(["p1", "p2", "p3"], n),
        "study_id": rng.choice(["s1", "s2"], n),
        "laterality": rng.choice(["L", "R"], n),
        "view": rng.choice(["CC", "MLO"], n),
        "score": rng.random(n),
        "label": rng.choice([0.0, 1.0, np.nan], n),
        "split": "test",
    })


def _truth(df: pd.DataFrame, level: str) -> pd.DataFrame:
    keys = ["patient_id", "study_id"] + (["laterality"] if level == "breast" else [])
    g = df.groupby(keys)
    return pd.DataFrame({"score": g["score"].max(), "label": g["label"].max(), "n": g.size()})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_predict_evaluate_and_ingest_agree_with_stats_levels(seed):
    api = importlib.import_module("mammolens.predict.api")
    ev = importlib.import_module("mammolens.evaluate.inputs")
    ingest = importlib.import_module("mammolens.data.ingest")
    df = _images(seed)
    pred = api.add_rollups(df)
    for level in ("breast", "exam"):
        keys = ["patient_id", "study_id"] + (["laterality"] if level == "breast" else [])
        want = _truth(df, level)
        ref = aggregate_scores(df, level=level).set_index(keys)
        # predict: per-image columns and the level tables
        per_image = pred.groupby(keys)[f"{level}_score"].agg(["min", "max"])
        assert (per_image["min"] == per_image["max"]).all()
        np.testing.assert_allclose(per_image["max"].loc[want.index], want["score"])
        table = (api.breast_table if level == "breast" else api.exam_table)(pred).set_index(keys)
        np.testing.assert_allclose(table.loc[want.index, f"{level}_score"], want["score"])
        assert (table.loc[want.index, "n_images"] == want["n"]).all()
        # evaluate: from the predictions' own roll-ups, and from image scores alone
        for src in (pred, df):
            lt = ev.level_table(src, level).set_index(keys)
            np.testing.assert_allclose(lt.loc[want.index, "score"], want["score"])
            np.testing.assert_allclose(lt.loc[want.index, "label"].astype(float), want["label"])
        np.testing.assert_allclose(ref.loc[want.index, "score"], want["score"])
        # ingest: labels (max of the known ones, empty when none is known)
        lab = (ingest.breast_labels if level == "breast" else ingest.exam_labels)(
            df.assign(label=df["label"].astype("Int64"))).set_index(keys)
        np.testing.assert_allclose(lab.loc[want.index, "label"].astype(float), want["label"])
        assert (lab.loc[want.index, "images"] == want["n"]).all()


def test_worker_roll_up_matches_the_table_rule():
    df = _images(3, n=12)
    df = df[(df.patient_id == "p1") & (df.study_id == "s1")]
    breasts, exam = roll_up(list(zip(df["laterality"], df["score"], strict=True)))
    table = add_level_scores(df)
    for lat, s in breasts.items():
        assert table.loc[table.laterality == lat, "breast_score"].iloc[0] == pytest.approx(s)
    assert table["exam_score"].iloc[0] == pytest.approx(exam)
    _, exam_mean = roll_up([("L", 0.2), ("L", 0.4), ("R", 0.9)], how="mean")
    assert exam_mean == pytest.approx(0.5)


def test_missing_keys_group_or_raise():
    df = _images(4, n=8)
    df.loc[0, "laterality"] = None
    from mammolens.stats import StatsInputError

    with pytest.raises(StatsInputError, match="missing key"):
        aggregate_scores(df, level="breast")
    grouped = aggregate_scores(df, level="breast", missing_keys="group")
    assert grouped["n_images"].sum() == len(df)
    assert add_level_scores(df)["breast_score"].notna().all()
