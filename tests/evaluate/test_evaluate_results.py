"""evaluate(): results.json keys, tables, figures and report sections on a fixture with
known properties (binormal scores: model d'=2.5, baseline d'=1.2; heatmaps hit 80%)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from mammolens.data.manifest import read_manifest
from mammolens.evaluate import evaluate, simulate_reader_study
from mammolens.evaluate.inputs import join_predictions, level_table, load_predictions


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, make_eval_cohort) -> dict:
    root = tmp_path_factory.mktemp("eval")
    f = make_eval_cohort(root, n_patients=80, seed=0)
    preds, _ = load_predictions(f["predictions"])
    man = read_manifest(f["manifest"])
    j, _ = join_predictions(preds, man, source="t")
    ex = level_table(j[j["split"] == "test"], "exam")
    cases = pd.DataFrame({"case": ex["study_id"], "truth": ex["label"].astype(int), "ai_score": ex["score"]})
    reads = simulate_reader_study(cases, n_readers=4, seed=3)
    reads.to_csv(root / "reads.csv", index=False)
    res = evaluate(f["predictions"], f["manifest"], root / "out", compare=f["baseline"], reads=root / "reads.csv", svg=True)
    return {"root": root, "res": res, "files": f, "results": json.loads((root / "out" / "results.json").read_text())}


def test_top_level_keys(run: dict) -> None:
    r = run["results"]
    for k in ("schema_version", "title", "generated_utc", "primary_level", "split", "val_split", "model", "inputs",
              "cohort", "performance", "comparison", "subgroups", "reader_study", "interpretability",
              "calibration", "model_card", "warnings", "files"):
        assert k in r, k
    assert r["split"] == "test" and r["model"] == "attention"
    assert r["inputs"]["n_unmatched_predictions"] == 0


def test_performance_levels_and_cis(run: dict) -> None:
    perf = run["results"]["performance"]
    assert set(perf) == {"image", "breast", "exam"}
    for lv, p in perf.items():
        a = p["auc"]
        assert a["ci_low"] <= a["auc"] <= a["ci_high"], lv
        assert p["n"] == p["n_pos"] + p["n_neg"]
        for k in ("sensitivity", "specificity", "accuracy"):
            m = p["metrics"][k]
            assert m["ci_low"] <= m["estimate"] <= m["ci_high"]
        assert p["operating_point"]["chosen_on"] == "val"
        assert (run["root"] / "out" / p["threshold_table"]).exists()
    # image level: binormal d' = 2.5 -> AUC = Phi(2.5 / sqrt 2) = 0.961
    assert abs(perf["image"]["auc"]["auc"] - norm.cdf(2.5 / np.sqrt(2))) < 0.05
    assert perf["image"]["auc"]["method"] == "delong_clustered"


def test_operating_point_is_chosen_on_validation(run: dict) -> None:
    from mammolens.stats.operating import operating_point

    preds, _ = load_predictions(run["files"]["predictions"])
    man = read_manifest(run["files"]["manifest"])
    j, _ = join_predictions(preds, man, source="t")
    v = j[j["split"] == "val"]
    thr = operating_point(v["label"].astype(int).to_numpy(), v["score"].to_numpy()).threshold
    assert run["results"]["performance"]["image"]["operating_point"]["threshold"] == pytest.approx(thr)
    # applied to test: the sensitivity is the share of malignant test images at or above it
    t = j[(j["split"] == "test")]
    sens = (t.loc[t["label"] == 1, "score"] >= thr).mean()
    assert run["results"]["performance"]["image"]["metrics"]["sensitivity"]["estimate"] == pytest.approx(sens)


def test_comparison(run: dict) -> None:
    c = run["results"]["comparison"]
    assert c["model"] == "attention" and c["baseline"] == "baseline"
    img = c["levels"]["image"]
    assert img["delong"]["auc_a"] > img["delong"]["auc_b"]
    assert img["delong"]["p_value"] < 0.01  # d' 2.5 vs 1.2 on 128 images
    assert 0 <= img["mcnemar"]["p_value"] <= 1


def test_cohort_and_flow(run: dict) -> None:
    c = run["results"]["cohort"]
    assert c["by_split"]["all"]["patients"] == 80
    assert c["by_split"]["all"]["images"] == 320
    assert c["by_split"]["test"]["patients"] == 32
    assert {r["value"] for r in c["by_manufacturer"]} == {"GE", "Hologic", "Siemens"}
    assert {r["value"] for r in c["by_density"]} <= {"A", "B", "C", "D"}
    flow = {f["step"]: f for f in c["flow"]}
    assert flow["analysed"]["n"] == 128 and flow["analysed"]["exams"] == 32


def test_subgroups(run: dict) -> None:
    s = run["results"]["subgroups"]
    for var in ("manufacturer", "density", "age_band"):
        assert "groups" in s[var] and "heterogeneity" in s[var]
    assert len(s["manufacturer"]["groups"]) == 3
    assert (run["root"] / "out" / "figures" / "forest.png").exists()


def test_reader_study(run: dict) -> None:
    rs = run["results"]["reader_study"]
    assert rs["case_level"] == "exam" and rs["n_readers"] == 4 and rs["n_cases"] == 32
    assert set(rs["reader_average"]) == {"unaided", "aided"}
    assert len(rs["per_reader"]) == 8
    assert rs["mrmc_or"]["method"] == "or"
    assert "p_value" in rs["ai_vs_readers"]
    acc = rs["heatmap_acceptability"]
    assert acc["n_ratings"] == 4 * 32 and 0 < acc["value"] < 1


def test_interpretability(run: dict) -> None:
    it = run["results"]["interpretability"]
    loc = it["localisation"]
    assert loc["n_images"] == run["results"]["performance"]["image"]["n_pos"]
    # the fixture's heatmaps hit the lesion with probability 0.8
    assert loc["hit_rate"]["ci_low"] <= 0.8 <= loc["hit_rate"]["ci_high"]
    assert 0 < loc["dice"]["mean"] <= 1
    g = it["gallery"]
    assert g["true_positive"] and all((run["root"] / "out" / x["file"]).exists() for x in g["true_positive"])
    thr = g["threshold"]
    assert all(x["score"] >= thr for x in g["true_positive"] + g["false_positive"])
    assert all(x["score"] < thr for x in g["false_negative"])
    # captions: laterality, view, score and truth
    for x in g["true_positive"] + g["false_negative"] + g["false_positive"]:
        assert x["laterality"] in ("L", "R") and x["view"] and x["label"] in (0, 1)
    assert all(x["label"] == 1 for x in g["true_positive"] + g["false_negative"])


def test_calibration(run: dict) -> None:
    cal = run["results"]["calibration"]
    assert 0 <= cal["brier"] <= 1 and len(cal["bins"]) == 10
    assert sum(b["n"] for b in cal["bins"]) == cal["n"]


def test_files_tables_figures(run: dict) -> None:
    out = run["root"] / "out"
    files = run["results"]["files"]
    for t in ("tables/cohort_by_split.csv", "tables/flow.csv", "tables/threshold_table_image.csv",
              "tables/subgroups.csv", "tables/comparison.csv", "tables/reader_aucs.csv", "tables/calibration.csv"):
        assert t in files["tables"] and (out / t).exists()
    for fig in ("roc_image", "roc_breast", "roc_exam", "roc_compare_image", "forest", "readers_roc", "calibration"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000
        assert (out / "figures" / f"{fig}.svg").exists()
    assert (out / "model_card.md").read_text().startswith("# Model card")


def test_report_is_self_contained_with_all_sections(run: dict) -> None:
    html = (run["root"] / "out" / "report.html").read_text()
    for sid in ("cohort", "performance", "comparison", "subgroups", "reader-study", "interpretability",
                "calibration", "model-card"):
        assert f'<section id="{sid}">' in html
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) >= 10 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="https?://', html)
    assert "chosen on the <b>val</b> split" in html
    assert "@media print" in html


def test_headline(run: dict) -> None:
    h = run["res"].headline()
    assert h["auc_image"]["auc"] == run["results"]["performance"]["image"]["auc"]["auc"]
    assert Path(h["report"]).name == "report.html"
