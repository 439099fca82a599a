"""Operating points (pROC coords "best"), proportions (statsmodels) and threshold tables.

pROC reference: ``coords(roc(aSAH$outcome, aSAH$s100b), "best", ret = c("threshold",
"specificity", "sensitivity"))`` -> threshold 0.205, specificity 0.8055556, sensitivity
0.6341463 (pROC documentation ``?coords``; pROC 1.18.0 output); wfns: 3.5 / 0.8333 /
0.6341; ndka: 11.08 / 0.5139 / 0.7073.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from mammolens.stats import (
    StatsInputError,
    binary_metrics,
    operating_point,
    proportion_ci,
    threshold_table,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def asah() -> pd.DataFrame:
    d = pd.read_csv(DATA / "pROC_aSAH.csv")
    d["poor"] = (d["outcome"] == "Poor").astype(int)
    return d


@pytest.mark.parametrize(
    ("marker", "thr", "spec", "sens"),
    [("s100b", 0.205, 0.8055555556, 0.6341463415), ("wfns", 3.5, 0.8333333333, 0.6341463415), ("ndka", 11.08, 0.5138888889, 0.7073170732)],
)
def test_youden_matches_proc_coords_best(asah, marker, thr, spec, sens):
    op = operating_point(asah["poor"], asah[marker])
    assert op.threshold == pytest.approx(thr, abs=1e-9)
    assert op.specificity == pytest.approx(spec, abs=1e-9)
    assert op.sensitivity == pytest.approx(sens, abs=1e-9)
    # the midpoint and the lowest positive score classify the data identically
    s = asah[marker].to_numpy()
    assert np.array_equal(s >= op.threshold, s >= op.min_positive_score)
    assert op.tp + op.fn == 41 and op.tn + op.fp == 72


def test_target_operating_points(asah):
    y, s = asah["poor"], asah["s100b"]
    op = operating_point(y, s, method="sensitivity", target=0.9)
    assert op.sensitivity >= 0.9
    # no higher threshold reaches the target: the next one up falls below it
    higher = np.unique(s[s > op.min_positive_score])
    if higher.size:
        assert ((s[y == 1] >= higher.min()).mean()) < 0.9
    op2 = operating_point(y, s, method="specificity", target=0.9)
    assert op2.specificity >= 0.9
    with pytest.raises(StatsInputError, match="target"):
        operating_point(y, s, method="sensitivity")


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (41, 113), (999, 1000)])
@pytest.mark.parametrize(("ours", "theirs"), [("wilson", "wilson"), ("exact", "beta")])
def test_proportion_ci_matches_statsmodels(k, n, ours, theirs):
    p = proportion_ci(k, n, method=ours)
    lo, hi = proportion_confint(k, n, alpha=0.05, method=theirs)
    assert p.ci_low == pytest.approx(lo, abs=1e-10)
    assert p.ci_high == pytest.approx(hi, abs=1e-10)
    assert p.value == k / n


def test_clopper_pearson_published_value():
    # Clopper & Pearson (1934) / standard tables: 0 of 10 -> 95% upper limit 0.3085
    assert proportion_ci(0, 10, method="exact").ci_high == pytest.approx(0.30850, abs=1e-5)


def test_binary_metrics(asah):
    y = asah["poor"].to_numpy()
    pred = (asah["s100b"] >= 0.205).astype(int)
    m = binary_metrics(y, pred, ci="exact")
    assert m["sensitivity"].k == 26 and m["sensitivity"].n == 41
    assert m["specificity"].value == pytest.approx(0.8055555556)
    assert m["accuracy"].n == 113
    assert m["ppv"].n == int(pred.sum())
    assert set(m) == {"sensitivity", "specificity", "accuracy", "ppv", "npv"}
    none = binary_metrics(y, np.zeros_like(y))
    assert np.isnan(none["ppv"].value)
    with pytest.raises(StatsInputError):
        binary_metrics(y, np.full(y.size, 2))


def test_threshold_table(asah):
    t = threshold_table(asah["poor"], asah["s100b"], thresholds=[0.5], target_sensitivities=(0.9,), target_specificities=(0.9,))
    assert list(t["criterion"]) == ["youden", "sensitivity>=0.9", "specificity>=0.9", "threshold=0.5"]
    assert t.loc[0, "threshold"] == pytest.approx(0.205)
    assert t.loc[1, "sensitivity"] >= 0.9 and t.loc[2, "specificity"] >= 0.9
    for c in ("sensitivity", "specificity", "accuracy", "ppv", "npv"):
        assert (t[f"{c}_ci_low"] <= t[c]).all() and (t[c] <= t[f"{c}_ci_high"]).all()
    assert (t[["tp", "fp", "tn", "fn"]].sum(axis=1) == 113).all()
