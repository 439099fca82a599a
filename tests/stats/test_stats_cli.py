"""`mammolens stats ...` commands: JSON keys, tables, and one-line errors with exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mammolens.cli import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["stats", *map(str, args)])


def _json(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def asah_csv(tmp_path_factory) -> Path:
    d = pd.read_csv(DATA / "pROC_aSAH.csv")
    d["pa"] = (d["s100b"] >= 0.205).astype(int)
    d["pb"] = (d["wfns"] >= 3.5).astype(int)
    p = tmp_path_factory.mktemp("cli") / "asah.parquet"
    d.to_parquet(p)
    return p


def test_roc_json(asah_csv):
    d = _json(_run("roc", asah_csv, "--truth", "outcome", "--positive", "Poor", "--score", "s100b", "--json"))
    assert {"auc", "ci_low", "ci_high", "n_pos", "n_neg", "method"} <= set(d)
    assert round(d["auc"], 4) == 0.7314 and round(d["ci_low"], 4) == 0.6301 and d["method"] == "delong"
    b = _json(_run("roc", asah_csv, "--truth", "outcome", "--positive", "Poor", "--score", "s100b", "--ci", "bootstrap", "--n-boot", "200", "--json"))
    assert b["method"] == "bootstrap"


def test_roc_levels_and_clusters(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({
        "image_id": np.arange(n), "patient_id": np.arange(n) // 4, "study_id": np.arange(n) // 4,
        "laterality": np.where(np.arange(n) % 4 < 2, "L", "R"), "label": rng.integers(0, 2, n),
    })
    df["score"] = rng.normal(size=n) + df["label"]
    p = tmp_path / "p.csv"
    df.to_csv(p, index=False)
    d = _json(_run("roc", p, "--truth", "label", "--score", "score", "--level", "breast", "--cluster", "patient_id", "--json"))
    assert d["n"] == 200 and d["n_clusters"] == 100 and d["level"] == "breast"


def test_compare_json(asah_csv):
    d = _json(_run("compare", asah_csv, "--truth", "outcome", "--positive", "Poor", "--score", "wfns", "--score", "s100b", "--json"))
    assert {"auc_a", "auc_b", "difference", "ci_low", "ci_high", "z", "p_value"} <= set(d)
    assert round(d["z"], 3) == 2.209 and round(d["p_value"], 5) == 0.02718


def test_mcnemar_json(asah_csv):
    d = _json(_run("mcnemar", asah_csv, "--truth", "outcome", "--positive", "Poor", "--pred", "pa", "--pred", "pb", "--json"))
    assert {"b", "c", "statistic", "p_value", "method"} <= set(d)
    e = _json(_run("mcnemar", asah_csv, "--score", "s100b", "--score", "wfns", "--threshold", "0.205", "--threshold", "3.5", "--json"))
    assert e["b"] + e["c"] > 0


def test_thresholds_table(asah_csv, tmp_path):
    out = tmp_path / "t1.csv"
    res = _run("thresholds", asah_csv, "--truth", "outcome", "--positive", "Poor", "--score", "s100b", "--out", out)
    assert res.exit_code == 0, res.output
    t = pd.read_csv(out)
    assert t.loc[0, "criterion"] == "youden" and t.loc[0, "threshold"] == pytest.approx(0.205)


def test_subgroups_json(asah_csv):
    d = _json(_run("subgroups", asah_csv, "--truth", "outcome", "--positive", "Poor", "--score", "s100b", "--by", "age", "--bins", "40,60", "--json"))
    assert [g["group"] for g in d["groups"]] == ["<40", "40-59", ">=60"]
    assert set(d["heterogeneity"]) >= {"q", "df", "p"}


def test_mrmc_json():
    d = _json(_run("mrmc", DATA / "vandyke_dataset02.csv", "--json"))
    assert round(d["f"], 3) == 4.456 and round(d["ddf"], 2) == 15.26 and round(d["p_value"], 4) == 0.0517
    assert {"auc", "ci_low", "ci_high"} <= set(d["modalities"][0])
    assert {"difference", "ci_low", "ci_high", "f", "ddf", "p_value"} <= set(d)
    res = _run("mrmc", DATA / "vandyke_dataset02.csv", "--method", "dbm")
    assert res.exit_code == 0 and "15.26" in res.stdout


def test_localization(tmp_path):
    from mammolens.data.heatmap_io import save_heatmaps
    from mammolens.data.transform import Transform

    rows, man = [], []
    for i in range(3):
        h = np.zeros((64, 48), dtype=np.float32)
        h[20 + i, 20] = 1.0 if i < 2 else 0.2  # third image: max elsewhere
        if i == 2:
            h[60, 5] = 1.0
        p = save_heatmaps(tmp_path / f"h{i}.npz", {"localization": h}, Transform.identity(64, 48))
        rows.append({"image_id": f"i{i}", "heatmap": str(p), "score": 0.5})
        man.append({"image_id": f"i{i}", "label": 1, "lesions": json.dumps([{"shape": "box", "x0": 15, "y0": 15, "x1": 30, "y1": 30, "pathology": "malignant"}])})
    man.append({"image_id": "n0", "label": 0, "lesions": ""})
    pd.DataFrame(rows).to_csv(tmp_path / "preds.csv", index=False)
    pd.DataFrame(man).to_csv(tmp_path / "man.csv", index=False)
    d = _json(_run("localization", tmp_path / "preds.csv", "--manifest", tmp_path / "man.csv", "--json"))
    assert d["n_images"] == 3 and d["hit_rate"] == pytest.approx(2 / 3)
    assert "0.25" in d["froc"]["sensitivity_at_fps"]
    # a broken heatmap is skipped (exit 3), the others still scored
    (tmp_path / "h1.npz").write_bytes(b"junk")
    res = _run("localization", tmp_path / "preds.csv", "--manifest", tmp_path / "man.csv", "--json")
    assert res.exit_code == 3
    assert json.loads(res.stdout)["n_images"] == 2


@pytest.mark.parametrize(
    "args",
    [
        ("roc", "/nonexistent/x.csv", "--truth", "a", "--score", "b"),
        ("roc", DATA / "pROC_aSAH.csv", "--truth", "nope", "--score", "s100b"),
        ("roc", DATA / "pROC_aSAH.csv", "--truth", "outcome", "--score", "s100b"),  # not 0/1, no --positive
        ("roc", DATA / "pROC_aSAH.csv", "--truth", "outcome", "--positive", "Poor", "--score", "gender"),
        ("compare", DATA / "pROC_aSAH.csv", "--truth", "outcome", "--positive", "Poor", "--score", "s100b"),
        ("mcnemar", DATA / "pROC_aSAH.csv", "--pred", "wfns", "--pred", "gos6"),
        ("mrmc", DATA / "pROC_aSAH.csv"),
        ("roc", DATA / "pROC_aSAH.csv", "--truth", "outcome", "--positive", "Poor", "--score", "s100b", "--ci", "nope"),
    ],
)
def test_errors_are_one_line_exit_1(args):
    res = _run(*args)
    assert res.exit_code == 1, res.output
    assert "error:" in res.stderr and "Traceback" not in res.output


def test_mrmc_with_ai(tmp_path):
    d = pd.read_csv(DATA / "vandyke_dataset02.csv")
    c = d.drop_duplicates("case")
    rng = np.random.default_rng(0)
    p = tmp_path / "ai.csv"
    pd.DataFrame({"case": c["case"], "prob": c["truth"] * 1.5 + rng.normal(size=len(c))}).to_csv(p, index=False)
    out = _json(_run("mrmc", DATA / "vandyke_dataset02.csv", "--ai", p, "--ai-score", "prob", "--ai-modality", "0", "--json"))
    a = out["ai_vs_readers"]
    assert round(a["reader_mean_auc"], 4) == 0.8970 and len(a["per_reader"]) == 5
    assert {"ai_auc", "difference", "ci_low", "ci_high", "p_value"} <= set(a)
    bad = _run("mrmc", DATA / "vandyke_dataset02.csv", "--ai", p, "--ai-score", "prob", "--ai-modality", "7")
    assert bad.exit_code == 1 and "no value '7'" in bad.stderr


def test_roc_partial_auc(asah_csv):
    d = _json(_run("roc", asah_csv, "--truth", "outcome", "--positive", "Poor", "--score", "s100b", "--partial-specificity", "0.8", "--json"))
    # pROC: auc(roc1, partial.auc = c(1, .8), partial.auc.focus = "sp"[, partial.auc.correct = TRUE])
    assert d["partial_auc"] == pytest.approx(0.08058943, abs=1e-8)
    assert d["partial_auc_mcclish"] == pytest.approx(0.668304, abs=1e-6)
