"""ROC/AUC/DeLong against R's pROC on pROC's own example data (aSAH).

Reference values: pROC documentation (``?roc``, ``?ci.auc``, ``?roc.test``, ``?coords``,
README "roc(aSAH$outcome, aSAH$s100b): Area under the curve: 0.7314, 95% CI:
0.6301-0.8326 (DeLong)"; roc.test(roc1 = wfns, roc2 = s100b): "Z = 2.209, p-value =
0.02718") and, to more digits, the output of pROC 1.18.0 (Debian r-cran-proc) on the same
calls with ``levels = c("Good", "Poor"), direction = "<"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from mammolens.stats import (
    StatsInputError,
    auc_ci,
    auc_score,
    bootstrap_auc,
    delong_test,
    partial_auc,
    roc_curve,
    unpaired_auc_test,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def asah() -> pd.DataFrame:
    d = pd.read_csv(DATA / "pROC_aSAH.csv")
    assert len(d) == 113
    d["poor"] = (d["outcome"] == "Poor").astype(int)
    return d


@pytest.mark.parametrize(
    ("marker", "auc", "lo", "hi", "var"),
    [
        # roc(aSAH$outcome, aSAH$s100b); ci.auc(); var()  (pROC 1.18.0)
        ("s100b", 0.7313685637, 0.6301182, 0.8326189, 0.002668682457),
        ("wfns", 0.8236788618, 0.7485349, 0.8988228, None),
        ("ndka", 0.6119579946, 0.501245, 0.722671, None),
    ],
)
def test_auc_delong_ci_matches_proc(asah, marker, auc, lo, hi, var):
    r = auc_ci(asah["poor"], asah[marker])
    assert r.auc == pytest.approx(auc, abs=1e-7)
    assert r.ci_low == pytest.approx(lo, abs=1e-6)
    assert r.ci_high == pytest.approx(hi, abs=1e-6)
    assert (r.n_pos, r.n_neg) == (41, 72)
    if var is not None:
        assert r.se**2 == pytest.approx(var, rel=1e-8)


def test_published_readme_values(asah):
    r = auc_ci(asah["outcome"], asah["s100b"], positive="Poor")
    assert round(r.auc, 4) == 0.7314
    assert (round(r.ci_low, 4), round(r.ci_high, 4)) == (0.6301, 0.8326)


def test_paired_delong_test_matches_proc(asah):
    # roc.test(roc(outcome, wfns), roc(outcome, s100b)): Z = 2.209, p-value = 0.02718
    c = delong_test(asah["poor"], asah["wfns"], asah["s100b"])
    assert c.z == pytest.approx(2.2089835914, abs=1e-8)
    assert c.p_value == pytest.approx(0.02717578223, abs=1e-9)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.01040617696, 0.17421441925), abs=1e-9)
    assert c.auc_a == pytest.approx(0.8236788618, abs=1e-9)
    assert round(c.z, 3) == 2.209 and round(c.p_value, 5) == 0.02718
    # roc.test(s100b, ndka): Z = 1.39077, p-value = 0.1642952
    c2 = delong_test(asah["poor"], asah["s100b"], asah["ndka"])
    assert c2.z == pytest.approx(1.39077, abs=1e-5)
    assert c2.p_value == pytest.approx(0.1642952, abs=1e-7)


def test_partial_auc_matches_proc(asah):
    # auc(roc1, partial.auc = c(1, .8), partial.auc.focus = "sp"[, partial.auc.correct = TRUE])
    p = partial_auc(asah["poor"], asah["s100b"], min_specificity=0.8, mcclish=True)
    assert p.pauc == pytest.approx(0.08058943, abs=1e-8)
    assert p.standardized == pytest.approx(0.668304, abs=1e-6)
    # focus = "se", sensitivity 1-0.9
    p = partial_auc(asah["poor"], asah["s100b"], min_sensitivity=0.9, mcclish=True)
    assert p.pauc == pytest.approx(0.01376355, abs=1e-8)
    assert p.standardized == pytest.approx(0.5461239, abs=1e-7)
    full = partial_auc(asah["poor"], asah["s100b"], min_specificity=0.0)
    assert full.pauc == pytest.approx(auc_score(asah["poor"], asah["s100b"]))
    with pytest.raises(StatsInputError):
        partial_auc(asah["poor"], asah["s100b"], min_specificity=0.8, min_sensitivity=0.9)


def test_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + y, 1)  # many ties
    assert auc_ci(y, s).auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    f2, t2, th2 = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])


def test_all_tied_scores_give_half():
    y = np.array([0, 1, 0, 1, 1])
    r = auc_ci(y, np.ones(5))
    assert r.auc == 0.5 and r.se == 0.0
    c = delong_test(y, np.ones(5), np.ones(5))
    assert c.p_value == 1.0 and c.z == 0.0


def test_logit_ci_stays_inside_unit_interval():
    y = np.r_[np.zeros(20), np.ones(5)]
    s = np.r_[np.linspace(0, 1, 20), [0.95, 1.1, 1.2, 1.3, 1.4]]
    r = auc_ci(y, s, method="delong_logit")
    assert 0 < r.ci_low < r.auc < r.ci_high < 1
    perfect = auc_ci(y, np.r_[np.zeros(20), np.ones(5)], method="delong_logit")
    assert perfect.auc == 1.0 and perfect.ci_low == perfect.ci_high == 1.0


def test_clustered_delong_reduces_to_delong_for_singletons(asah):
    a = auc_ci(asah["poor"], asah["s100b"])
    b = auc_ci(asah["poor"], asah["s100b"], clusters=np.arange(len(asah)))
    assert b.se == pytest.approx(a.se, rel=1e-12)
    assert b.n_clusters == len(asah)


def test_clustered_variance_grows_with_duplicated_cases(asah):
    # every case twice, clustered by patient: the same information as one copy
    d = pd.concat([asah, asah])
    one = auc_ci(asah["poor"], asah["s100b"])
    naive = auc_ci(d["poor"], d["s100b"])
    clus = auc_ci(d["poor"], d["s100b"], clusters=d.index.to_numpy())
    assert naive.se < one.se
    assert clus.se == pytest.approx(one.se, rel=0.02)


def test_bootstrap_ci(asah):
    r = auc_ci(asah["poor"], asah["s100b"], method="bootstrap", n_boot=2000, seed=42)
    r2 = auc_ci(asah["poor"], asah["s100b"], method="bootstrap", n_boot=2000, seed=42)
    assert r == r2  # reproducible with a seed
    # pROC: ci.auc(roc1, method = "bootstrap") ~ 0.63-0.83 (Monte Carlo)
    assert r.ci_low == pytest.approx(0.63, abs=0.025)
    assert r.ci_high == pytest.approx(0.83, abs=0.025)
    assert r.se == pytest.approx(0.0517, abs=0.006)


def test_bootstrap_weights_match_explicit_resampling():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)
    boots = bootstrap_auc(y, s, n_boot=50, seed=7)
    # recompute each resample explicitly with the same generator stream
    g = np.random.default_rng(7)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    dp = g.integers(0, pos.size, size=(50, pos.size))
    dn = g.integers(0, neg.size, size=(50, neg.size))
    for b in range(50):
        idx = np.r_[pos[dp[b]], neg[dn[b]]]
        assert boots[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)


def test_cluster_bootstrap_keeps_patients_together():
    rng = np.random.default_rng(0)
    pid = np.repeat(np.arange(300), 4)
    y = np.repeat(rng.integers(0, 2, 300), 4)
    s = np.repeat(rng.normal(size=300), 4) + y
    r = auc_ci(y, s, method="bootstrap", clusters=pid, seed=1, n_boot=500)
    one = auc_ci(y[::4], s[::4])
    assert r.se == pytest.approx(one.se, rel=0.15)
    assert r.n_clusters == 300


def test_unpaired_test(asah):
    a = asah.iloc[:60]
    b = asah.iloc[60:]
    c = unpaired_auc_test(a["poor"], a["s100b"], b["poor"], b["s100b"])
    ra, rb = auc_ci(a["poor"], a["s100b"]), auc_ci(b["poor"], b["s100b"])
    assert c.difference == pytest.approx(ra.auc - rb.auc)
    assert c.se == pytest.approx(np.hypot(ra.se, rb.se))
    assert 0 < c.p_value <= 1


@pytest.mark.parametrize(
    ("y", "s", "msg"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "only one class"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
        ([0, 1, 1], [0.1, np.inf, 0.3], "non-finite"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "expected 0/1"),
        ([0, 1, np.nan], [0.1, 0.2, 0.3], "missing"),
        (["a", "b", "a"], [0.1, 0.2, 0.3], "not 0/1"),
        ([0, 1], [0.1, 0.2, 0.3], "does not match"),
    ],
)
def test_bad_input_raises_clear_value_error(y, s, msg):
    with pytest.raises(ValueError, match=msg):
        auc_ci(y, s)


def test_bad_options():
    with pytest.raises(StatsInputError, match="method"):
        auc_ci([0, 1], [0.1, 0.2], method="hanley")
    with pytest.raises(StatsInputError, match="alpha"):
        auc_ci([0, 1], [0.1, 0.2], alpha=1.5)
    with pytest.raises(StatsInputError, match="positive value"):
        auc_ci(["a", "b"], [0.1, 0.2], positive="c")
    with pytest.raises(StatsInputError, match="clusters"):
        auc_ci([0, 1], [0.1, 0.2], clusters=[1, 2, 3])


def test_results_are_frozen_with_to_dict(asah):
    r = auc_ci(asah["poor"], asah["s100b"])
    d = r.to_dict()
    assert {"auc", "ci_low", "ci_high", "n_pos", "n_neg", "method"} <= set(d)
    with pytest.raises(AttributeError):
        r.auc = 0.5  # type: ignore[misc]
    c = delong_test(asah["poor"], asah["wfns"], asah["s100b"]).to_dict()
    assert {"auc_a", "auc_b", "difference", "ci_low", "ci_high", "z", "p_value"} <= set(c)


def test_cluster_bootstrap_when_every_patient_has_both_classes():
    rng = np.random.default_rng(0)
    pid = np.repeat(np.arange(100), 4)
    y = np.tile([0, 0, 0, 1], 100)
    s = rng.normal(size=400) + y
    r = auc_ci(y, s, method="bootstrap", clusters=pid, n_boot=200, seed=0)
    assert np.isfinite([r.ci_low, r.ci_high]).all() and r.ci_low < r.auc < r.ci_high


@pytest.mark.slow  # wall-clock limits: fails on a busy shared machine (27 s seen for the bootstrap)
def test_speed_delong_one_million_and_bootstrap():
    import time

    rng = np.random.default_rng(0)
    n = 1_000_000
    y = (rng.random(n) < 0.3).astype(np.int8)
    s = rng.normal(size=n) + y
    t = time.perf_counter()
    auc_ci(y, s)
    assert time.perf_counter() - t < 3.0  # < 1 s on an idle core; slack for shared CI machines
    ye = (rng.random(14_000) < 0.1).astype(int)
    t = time.perf_counter()
    auc_ci(ye, rng.normal(size=14_000) + ye, method="bootstrap", clusters=rng.integers(0, 6000, 14_000), seed=0)
    assert time.perf_counter() - t < 10.0
