"""Bad inputs: ids that do not match, missing columns, one-class splits, bad reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mammolens.errors import MammolensError
from mammolens.evaluate import EvaluationError, evaluate


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, make_eval_cohort) -> dict[str, Path]:
    return make_eval_cohort(tmp_path_factory.mktemp("bad"), n_patients=30, seed=1, heatmaps=False)


def test_no_matching_ids_stops(cohort: dict, tmp_path: Path) -> None:
    p = pd.read_csv(cohort["predictions"])
    p["image_id"] = "X" + p["image_id"]
    p.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(EvaluationError, match="none of the 120 prediction image_id"):
        evaluate(tmp_path / "p.csv", cohort["manifest"], tmp_path / "out", svg=False)


def test_partial_mismatch_is_counted(cohort: dict, tmp_path: Path) -> None:
    p = pd.read_csv(cohort["predictions"])
    extra = p.head(7).copy()
    extra["image_id"] = "unknown_" + extra["image_id"]
    pd.concat([p, extra]).to_csv(tmp_path / "p.csv", index=False)
    res = evaluate(tmp_path / "p.csv", cohort["manifest"], tmp_path / "out", svg=False, gallery_size=0)
    assert res.results["inputs"]["n_unmatched_predictions"] == 7
    assert any("7 prediction(s)" in w for w in res.results["warnings"])


def test_missing_columns(cohort: dict, tmp_path: Path) -> None:
    p = pd.read_csv(cohort["predictions"]).drop(columns=["score"])
    p.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(EvaluationError, match=r"lack required column\(s\) \['score'\]"):
        evaluate(tmp_path / "p.csv", cohort["manifest"], tmp_path / "out", svg=False)


def test_one_class_split(cohort: dict, tmp_path: Path) -> None:
    m = pd.read_csv(cohort["manifest"], dtype=str, keep_default_na=False)
    m.loc[m["split"] == "test", "label"] = "0"
    m.loc[m["split"] == "test", "lesions"] = ""
    m.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(EvaluationError, match="has no malignant images"):
        evaluate(cohort["predictions"], tmp_path / "m.csv", tmp_path / "out", svg=False)


def test_empty_split(cohort: dict, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="no predicted image is in split 'holdout'"):
        evaluate(cohort["predictions"], cohort["manifest"], tmp_path / "out", split="holdout", svg=False)


def test_bad_reads(cohort: dict, tmp_path: Path) -> None:
    pd.DataFrame({"reader": ["A"], "case": ["S000"], "modality": ["with"], "truth": [1], "score": [3]}).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(EvaluationError, match="modality must be 'unaided' or 'aided'"):
        evaluate(cohort["predictions"], cohort["manifest"], tmp_path / "out", reads=tmp_path / "r.csv", svg=False)


def test_errors_are_mammolens_errors() -> None:
    assert issubclass(EvaluationError, MammolensError)


def test_cli_one_line_error_exit_1(cohort: dict, tmp_path: Path) -> None:
    from mammolens.cli import app

    p = pd.read_csv(cohort["predictions"])
    p["image_id"] = "X" + p["image_id"]
    p.to_csv(tmp_path / "p.csv", index=False)
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "p.csv"), "--manifest", str(cohort["manifest"]), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert "error:" in r.output and "Traceback" not in r.output


def test_cli_json(cohort: dict, tmp_path: Path) -> None:
    import json

    from mammolens.cli import app

    r = CliRunner().invoke(app, ["evaluate", str(cohort["predictions"]), "--manifest", str(cohort["manifest"]),
                                 "--out", str(tmp_path / "o"), "--compare", str(cohort["baseline"]), "--json", "--gallery", "0"])
    assert r.exit_code == 0, r.output
    head = json.loads(r.stdout[r.stdout.index("{"):])
    assert 0.5 < head["auc_image"]["auc"] <= 1
    assert (tmp_path / "o" / "report.html").exists()


def test_qc_exclusions_in_flow(cohort: dict, tmp_path: Path) -> None:
    from mammolens.qc import QCTable

    qc = QCTable()
    qc.add("ingest", "/x/a.dcm", "not a DICOM file: bad preamble")
    qc.add("ingest", "/x/b.dcm", "not a DICOM file: truncated")
    qc.add("ingest", "/x/c.dcm", "wrong modality: CT")
    m = pd.read_csv(cohort["manifest"], dtype=str, keep_default_na=False)
    qc.add("preprocess", m["path"][0], "no breast found", image_id=m["image_id"][0])
    qc.add("preprocess", "gone.png", "cannot decode", image_id="gone_image")
    qc.write_csv(tmp_path / "qc.csv")
    res = evaluate(cohort["predictions"], cohort["manifest"], tmp_path / "out", qc=[tmp_path / "qc.csv"], svg=False, gallery_size=0)
    flow = {f["step"]: f for f in res.results["cohort"]["flow"]}
    assert flow["rejected at ingest (QC)"]["excluded"] == 3
    assert flow["rejected at ingest (QC)"]["reasons"] == {"not a DICOM file": 2, "wrong modality": 1}
    assert flow["rejected at preprocess (QC)"]["excluded"] == 2
    assert flow["inputs found"]["n"] == 120 + 4  # 3 ingest + 1 preprocess rejection not in the manifest
    assert (tmp_path / "out" / "tables" / "qc_exclusions.csv").exists()
    assert "no breast found: 1" in res.report_path.read_text()


def test_cli_help_has_example() -> None:
    from mammolens.cli import app

    r = CliRunner().invoke(app, ["evaluate", "--help"])
    assert r.exit_code == 0
    for opt in ("--manifest", "--compare", "--reads", "--split", "--qc", "--json"):
        assert opt in r.output
    assert "Example" in r.output


def test_cli_bad_level_is_usage_error(cohort: dict, tmp_path: Path) -> None:
    from mammolens.cli import app

    r = CliRunner().invoke(app, ["evaluate", str(cohort["predictions"]), "--manifest", str(cohort["manifest"]),
                                 "--out", str(tmp_path / "o"), "--level", "patient"])
    assert r.exit_code == 2


def test_without_validation_predictions_says_so(cohort: dict, tmp_path: Path) -> None:
    p = pd.read_csv(cohort["predictions"])
    m = pd.read_csv(cohort["manifest"], dtype=str, keep_default_na=False)
    test_ids = set(m.loc[m["split"] == "test", "image_id"])
    p[p["image_id"].isin(test_ids)].to_csv(tmp_path / "p.csv", index=False)
    res = evaluate(tmp_path / "p.csv", cohort["manifest"], tmp_path / "out", svg=False, gallery_size=0)
    op = res.results["performance"]["image"]["operating_point"]
    assert op["chosen_on"].startswith("evaluated split")
    assert any("operating points were chosen on the evaluated split" in w for w in res.results["warnings"])
    assert "optimistic" in res.report_path.read_text()
