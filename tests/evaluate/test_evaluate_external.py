"""Evaluating other people's predictions: a named score column, incomplete predictions,
zero-variance subgroups in the heterogeneity test, and nothing written on a refused input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mammolens.evaluate import EvaluationError, evaluate


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, make_eval_cohort) -> dict[str, Path]:
    return make_eval_cohort(tmp_path_factory.mktemp("ext"), n_patients=60, seed=4, heatmaps=False)


def _wide_env() -> dict[str, str]:
    return {"COLUMNS": "400", "TERM": "dumb"}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _drop_test_images(cohort: dict, tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    p = pd.read_csv(cohort["predictions"], dtype={"image_id": str})
    m = pd.read_csv(cohort["manifest"], dtype=str, keep_default_na=False)
    test_ids = m.loc[m["split"] == "test", "image_id"].tolist()
    gone = test_ids[:n]
    p[~p["image_id"].isin(gone)].to_csv(tmp_path / "p.csv", index=False)
    return tmp_path / "p.csv", gone


def test_missing_predictions_warn_in_results_report_and_table(cohort: dict, tmp_path: Path) -> None:
    path, gone = _drop_test_images(cohort, tmp_path, 21)
    res = evaluate(path, cohort["manifest"], tmp_path / "out", svg=False, gallery_size=0)
    c = res.results["completeness"]
    n_test = c["n_expected"]
    assert c == {**c, "n_missing": 21, "n_predicted": n_test - 21, "complete": False}
    assert any(w.startswith(f"21 of {n_test} image(s) of split 'test'") for w in res.results["warnings"])
    miss = pd.read_csv(tmp_path / "out" / "tables" / "missing_predictions.csv", dtype={"image_id": str})
    assert sorted(miss["image_id"]) == sorted(gone)
    assert int(miss["label"].sum()) == c["n_missing_malignant"]
    html = _flat(res.report_path.read_text())
    assert f"Incomplete predictions:</b> 21 of {n_test} image(s)" in html


def test_complete_predictions_no_warning(cohort: dict, tmp_path: Path) -> None:
    res = evaluate(cohort["predictions"], cohort["manifest"], tmp_path / "out", svg=False, gallery_size=0,
                   require_complete=True)
    assert res.results["completeness"]["complete"] is True
    assert not any("have no prediction" in w for w in res.results["warnings"])
    assert not (tmp_path / "out" / "tables" / "missing_predictions.csv").exists()


def test_require_complete_refuses_and_writes_nothing(cohort: dict, tmp_path: Path) -> None:
    path, _ = _drop_test_images(cohort, tmp_path, 21)
    with pytest.raises(EvaluationError, match=r"21 of \d+ image\(s\) of split 'test' .*--require-complete"):
        evaluate(path, cohort["manifest"], tmp_path / "out", svg=False, require_complete=True)
    assert not (tmp_path / "out").exists()


def test_cli_missing_predictions_console_and_require_complete(cohort: dict, tmp_path: Path) -> None:
    from mammolens.cli import app

    path, _ = _drop_test_images(cohort, tmp_path, 21)
    args = ["evaluate", str(path), "--manifest", str(cohort["manifest"]), "--gallery", "0"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o1")], env=_wide_env())
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "have no prediction" in _flat(r.output)
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2"), "--require-complete"], env=_wide_env())
    assert r.exit_code == 1
    out = _flat(r.output)
    assert "error:" in out and "21 of" in out and "--require-complete" in out and "Traceback" not in out
    assert not (tmp_path / "o2").exists()


def test_named_score_column(cohort: dict, tmp_path: Path) -> None:
    p = pd.read_csv(cohort["predictions"], dtype={"image_id": str})
    ext = p[["image_id"]].assign(malignant=p["score"], score=1.0 - p["score"])  # a decoy 'score'
    ext.to_csv(tmp_path / "ext.csv", index=False)
    ref = evaluate(cohort["predictions"], cohort["manifest"], tmp_path / "ref", svg=False, gallery_size=0)
    res = evaluate(tmp_path / "ext.csv", cohort["manifest"], tmp_path / "out", svg=False, gallery_size=0, score="malignant")
    for lv in ("image", "breast", "exam"):
        assert res.results["performance"][lv]["auc"]["auc"] == pytest.approx(ref.results["performance"][lv]["auc"]["auc"])
    assert res.results["inputs"]["score_column"] == "malignant"


def test_missing_score_column_suggests_score_option(cohort: dict, tmp_path: Path) -> None:
    p = pd.read_csv(cohort["predictions"], dtype={"image_id": str})
    p[["image_id"]].assign(prob=p["score"]).to_csv(tmp_path / "ext.csv", index=False)
    with pytest.raises(EvaluationError, match=r"lack required column\(s\) \['score'\].*--score prob"):
        evaluate(tmp_path / "ext.csv", cohort["manifest"], tmp_path / "out", svg=False)
    with pytest.raises(EvaluationError, match="no score column 'malignant'"):
        evaluate(tmp_path / "ext.csv", cohort["manifest"], tmp_path / "out", svg=False, score="malignant")
    assert not (tmp_path / "out").exists()


def test_cli_score_and_compare_score(cohort: dict, tmp_path: Path) -> None:
    from mammolens.cli import app

    p = pd.read_csv(cohort["predictions"], dtype={"image_id": str})
    b = pd.read_csv(cohort["baseline"], dtype={"image_id": str})
    p[["image_id"]].assign(malignant=p["score"]).to_csv(tmp_path / "a.csv", index=False)
    b[["image_id"]].assign(prob=b["score"]).to_csv(tmp_path / "b.csv", index=False)
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "a.csv"), "--score", "malignant", "--compare", str(tmp_path / "b.csv"),
                                 "--compare-score", "prob", "--manifest", str(cohort["manifest"]), "--out", str(tmp_path / "o"),
                                 "--gallery", "0", "--json"], env=_wide_env())
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "tables" / "comparison.csv").exists()


def test_leakage_writes_nothing(cohort: dict, tmp_path: Path) -> None:
    from mammolens.errors import MammolensError

    m = pd.read_csv(cohort["manifest"], dtype=str, keep_default_na=False)
    pid = m.loc[m["split"] == "test", "patient_id"].iloc[0]
    m.loc[(m["patient_id"] == pid) & (m["view"] == "CC"), "split"] = "train"
    m.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(MammolensError, match="leakage"):
        evaluate(cohort["predictions"], tmp_path / "m.csv", tmp_path / "out", svg=False)
    assert not (tmp_path / "out").exists()


def test_refusal_late_in_the_run_leaves_existing_output_untouched(cohort: dict, tmp_path: Path) -> None:
    """The comparison is refused after figures were drawn: the old output stays as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    b = pd.read_csv(cohort["baseline"], dtype={"image_id": str})
    m = pd.read_csv(cohort["manifest"], dtype=str, keep_default_na=False)
    test_ids = m.loc[m["split"] == "test", "image_id"]
    b[~b["image_id"].isin(test_ids.head(4))].to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(EvaluationError, match="comparison predictions lack"):
        evaluate(cohort["predictions"], cohort["manifest"], out, compare=tmp_path / "b.csv", svg=False, gallery_size=0)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_rerun_replaces_stale_figures(cohort: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    evaluate(cohort["predictions"], cohort["manifest"], out, compare=cohort["baseline"], svg=False, gallery_size=0)
    assert (out / "figures" / "roc_compare_image.png").exists()
    res = evaluate(cohort["predictions"], cohort["manifest"], out, svg=False, gallery_size=0)
    assert not (out / "figures" / "roc_compare_image.png").exists()
    assert res.results_path == out / "results.json" and res.results_path.exists()
    assert all(p.exists() and out in p.parents for p in res.figures + res.tables)


def test_zero_se_subgroup_is_in_cochran_q(cohort: dict, tmp_path: Path) -> None:
    m = pd.read_csv(cohort["manifest"], dtype=str, keep_default_na=False)
    p = pd.read_csv(cohort["predictions"], dtype={"image_id": str})
    j = p.merge(m[["image_id", "manufacturer", "label", "split"]], on="image_id")
    ge = (j["manufacturer"] == "GE").to_numpy()
    lab = j["label"].astype(int).to_numpy()
    j.loc[ge, "score"] = 0.6 * lab[ge] + 0.2 + 0.1 * j.loc[ge, "score"]  # perfect separation for GE
    j.drop(columns=["manufacturer", "label", "split"]).to_csv(tmp_path / "p.csv", index=False)
    res = evaluate(tmp_path / "p.csv", cohort["manifest"], tmp_path / "out", svg=False, gallery_size=0)
    man = res.results["subgroups"]["manufacturer"]
    ge_row = next(g for g in man["groups"] if g["group"] == "GE")
    assert ge_row["auc"] == 1.0 and ge_row["se"] == 0.0  # the case of the issue
    het = man["heterogeneity"]
    assert het["df"] == 2 and het["n_groups_tested"] == 3
    assert "GE" in [c["group"] for c in het["corrected"]]
    assert any("GE has AUC 1.000 with zero standard error" in w for w in res.results["warnings"])
    sub = pd.read_csv(tmp_path / "out" / "tables" / "subgroups.csv")
    row = sub[(sub["variable"] == "manufacturer") & (sub["subgroup"] == "GE")].iloc[0]
    assert bool(row["in_heterogeneity_test"]) and "continuity-corrected" in row["note"]
    assert "zero SE, continuity-corrected" in res.report_path.read_text()
