"""evaluate with the benign output: a secondary benign-vs-normal AUC; the primary figures
stay on the malignant score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mammolens.evaluate import evaluate


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, make_eval_cohort) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("benign")
    c = make_eval_cohort(root, n_patients=80, seed=6, heatmaps=False)
    m = pd.read_csv(c["manifest"], dtype={"image_id": str}, keep_default_na=False)
    p = pd.read_csv(c["predictions"], dtype={"image_id": str})
    rng = np.random.default_rng(0)
    ben = m.set_index("image_id").loc[p["image_id"], "outcome"].eq("benign").to_numpy()
    p["benign_score"] = 1 / (1 + np.exp(-(3.0 * ben - 1.5 + rng.normal(0, 1, len(p)))))
    p.to_csv(root / "with_benign.csv", index=False)
    return {**c, "with_benign": root / "with_benign.csv"}


def test_benign_auc_is_a_secondary_figure(cohort: dict, tmp_path: Path) -> None:
    ref = evaluate(cohort["predictions"], cohort["manifest"], tmp_path / "ref", svg=False, gallery_size=0)
    res = evaluate(cohort["with_benign"], cohort["manifest"], tmp_path / "out", svg=False, gallery_size=0)
    assert ref.results["performance_benign"] is None
    b = res.results["performance_benign"]
    m = pd.read_csv(cohort["manifest"], dtype=str, keep_default_na=False)
    test = m[(m["split"] == "test") & (m["label"] == "0")]
    im = b["levels"]["image"]
    assert im["n_benign"] == int((test["outcome"] == "benign").sum()) > 0
    assert im["n_normal"] == int((test["outcome"] == "normal").sum())
    assert 0.8 < im["auc"]["auc"] <= 1.0 and im["auc"]["ci_low"] < im["auc"]["auc"]
    # breasts: non-malignant ones only, benign when any of their images is
    br = b["levels"]["breast"]
    tb = test.groupby(["patient_id", "study_id", "laterality"])["outcome"].agg(lambda o: (o == "benign").any())
    assert br["n"] == len(tb) and br["n_benign"] == int(tb.sum())
    # every primary figure is the malignant score's, unchanged by the extra column
    for lv, p in ref.results["performance"].items():
        assert res.results["performance"][lv]["auc"] == p["auc"]
    assert res.headline()["benign_auc_image"] == im["auc"]
    assert "Benign output (secondary)" in res.report_path.read_text(encoding="utf-8")


def test_cli_prints_the_benign_auc(cohort: dict, tmp_path: Path) -> None:
    from mammolens.cli import app

    r = CliRunner().invoke(app, ["evaluate", str(cohort["with_benign"]), "--manifest", str(cohort["manifest"]),
                                 "--out", str(tmp_path / "cli"), "--gallery", "0"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert r.exit_code == 0, r.output
    assert "benign output (secondary), benign vs normal images: AUC" in " ".join(r.output.split())
