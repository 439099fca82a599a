"""predict with the benign output: benign_score beside score, its roll-ups (max, as the
malignant one), the GMIC-style exam table; runs without the output keep their tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mammolens.predict import load_predictor, predict
from mammolens.predict.table import GMIC_COLUMNS, gmic_exam_table
from mammolens.testing.toydata import make_toy_cache, make_toy_cohort
from mammolens.train.api import train


@pytest.fixture(scope="module")
def benign_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpred")
    manifest = make_toy_cohort(d, n_patients=10, size=(96, 80), seed=5, benign_fraction=0.6)
    make_toy_cache(manifest, d / "cache", size=(64, 48))
    over = ["model.benign_output=true", "heads.enabled=true", "heads.epochs=2", "train.max_epochs=0", "model.pretrained=none"]
    res = train(manifest, d / "cache", config="tiny", out=d / "run", overrides=over, progress=False)
    return manifest, d / "cache", res.run_dir


def test_predict_writes_benign_columns_and_rollups(benign_run, tmp_path):
    manifest, cache, run = benign_run
    out = tmp_path / "p.csv"
    df = predict(run, [manifest], out, cache=cache, progress=False)
    disk = pd.read_csv(out)
    for c in ("score", "benign_score", "breast_benign_score", "exam_benign_score", "benign_logit"):
        assert c in disk.columns, c
    assert disk["score"].between(0, 1).all() and disk["benign_score"].between(0, 1).all()
    assert np.allclose(disk["benign_score"], 1 / (1 + np.exp(-disk["benign_logit"])), atol=1e-5)
    # the two outputs differ (two heads, not one score written twice)
    assert not np.allclose(disk["benign_score"], disk["score"])
    # roll-ups: max over the breast's views, max over the exam, as for the malignant score
    for _, g in disk.groupby(["patient_id", "study_id", "laterality"]):
        assert np.allclose(g["breast_benign_score"], g["benign_score"].max())
        assert np.allclose(g["breast_score"], g["score"].max())
    for _, g in disk.groupby(["patient_id", "study_id"]):
        assert np.allclose(g["exam_benign_score"], g["benign_score"].max())
    br = pd.read_csv(tmp_path / "p_breast.csv")
    ex = pd.read_csv(tmp_path / "p_exam.csv")
    assert list(br.columns) == ["patient_id", "study_id", "laterality", "breast_score", "breast_benign_score", "n_images"]
    assert list(ex.columns) == ["patient_id", "study_id", "exam_score", "exam_benign_score", "n_images"]
    # the GMIC / NYU layout: one row per exam, each breast's benign and malignant probability
    gm = pd.read_csv(tmp_path / "p_exam_gmic.csv")
    assert list(gm.columns) == GMIC_COLUMNS and len(gm) == disk["study_id"].nunique()
    assert df.attrs["gmic_path"] == str(tmp_path / "p_exam_gmic.csv")
    for r in gm.itertuples(index=False):
        for lat, side in (("L", "left"), ("R", "right")):
            g = disk[(disk["study_id"] == r.study_id) & (disk["laterality"] == lat)]
            assert getattr(r, f"{side}_malignant") == pytest.approx(g["score"].max())
            assert getattr(r, f"{side}_benign") == pytest.approx(g["benign_score"].max())
    # evaluate's inputs are unchanged: score is the malignant probability
    assert np.allclose(disk["score"], 1 / (1 + np.exp(-disk["logit"])), atol=1e-5)
    assert load_predictor(run).describe()["outputs"] == ["malignant", "benign"]


def test_predict_files_carry_benign_score(benign_run, tmp_path):
    manifest, _cache, run = benign_run
    m = pd.read_csv(manifest)
    files = [str(manifest.parent / p) for p in m["path"][:3]]
    df = load_predictor(run).predict_files(files)
    assert df["benign_score"].between(0, 1).all() and "breast_benign_score" in df.columns


def test_old_checkpoint_without_the_option_predicts_without_benign_columns(benign_run, tmp_path):
    """A run from before the option (no ``model.benign_output`` key, no benign weights)."""
    manifest, cache, _run = benign_run
    from mammolens.serve.scoring import write_untrained_run

    old = write_untrained_run(tmp_path / "old", preset="tiny", image_size=(64, 48), overrides={"predict.gradcam": False})
    ck_path = old / "checkpoints" / "last.ckpt"
    ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    del ck["hyper_parameters"]["config"]["model"]["benign_output"]  # as written before the option existed
    assert not any("benign" in k for k in ck["state_dict"])
    torch.save(ck, ck_path)
    out = tmp_path / "old.csv"
    (tmp_path / "old_exam_gmic.csv").write_text("stale\n")  # from an earlier run with the output
    df = predict(old, [manifest], out, cache=cache, progress=False)
    disk = pd.read_csv(out)
    assert not any("benign" in c for c in disk.columns)
    assert disk["score"].between(0, 1).all()
    assert df.attrs["gmic_path"] is None and not (tmp_path / "old_exam_gmic.csv").exists()
    assert "breast_benign_score" not in pd.read_csv(tmp_path / "old_breast.csv").columns
    assert load_predictor(old).describe()["outputs"] == ["malignant"]


def test_gmic_table_layout_and_refusal():
    df = pd.DataFrame({
        "image_id": list("abcde"), "patient_id": ["p"] * 4 + ["q"], "study_id": ["s"] * 4 + ["t"],
        "laterality": ["L", "L", "R", "R", "L"], "view": ["CC", "MLO"] * 2 + ["CC"],
        "score": [0.1, 0.4, 0.2, 0.3, 0.9], "benign_score": [0.5, 0.2, 0.1, 0.6, 0.05],
    })
    g = gmic_exam_table(df).set_index("study_id")
    assert g.loc["s", "left_malignant"] == 0.4 and g.loc["s", "left_benign"] == 0.5
    assert g.loc["s", "right_malignant"] == 0.3 and g.loc["s", "right_benign"] == 0.6
    assert g.loc["t", "left_malignant"] == 0.9 and np.isnan(g.loc["t", "right_malignant"])
    with pytest.raises(ValueError, match="benign"):
        gmic_exam_table(df.drop(columns=["benign_score"]))


def test_cli_predict_json_names_the_gmic_table(benign_run, tmp_path):
    from typer.testing import CliRunner

    from mammolens.cli import app

    manifest, cache, run = benign_run
    out = tmp_path / "cli.csv"
    r = CliRunner().invoke(app, ["predict", str(run), str(manifest), "--cache", str(cache), "--out", str(out), "--json", "-q"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["exam_gmic"] == str(tmp_path / "cli_exam_gmic.csv")
