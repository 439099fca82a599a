"""Image -> breast -> exam roll-ups, subgroup AUCs and Cochran's Q."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from mammolens.stats import (
    StatsInputError,
    age_bands,
    aggregate_scores,
    auc_ci,
    cochran_q,
    subgroup_analysis,
)


def _images() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": ["a", "b", "c", "d", "e", "f"],
        "patient_id": ["p1", "p1", "p1", "p1", "p2", "p2"],
        "study_id": ["s1", "s1", "s1", "s1", "s2", "s2"],
        "laterality": ["L", "L", "R", "R", "L", "R"],
        "score": [0.1, 0.7, 0.2, 0.4, 0.3, 0.9],
        "label": [0, 1, 0, 0, 0, 0],
    })


def test_breast_and_exam_rollups():
    df = _images()
    b = aggregate_scores(df, level="breast")
    assert len(b) == 4
    left = b[(b.patient_id == "p1") & (b.laterality == "L")].iloc[0]
    assert left.score == 0.7 and left.label == 1 and left.n_images == 2
    e = aggregate_scores(df, level="exam", how="mean")
    assert e.set_index("patient_id").loc["p1", "score"] == pytest.approx(0.35)
    assert e.set_index("patient_id").loc["p1", "label"] == 1  # truth rolls up by max
    assert e.set_index("patient_id").loc["p2", "label"] == 0
    assert len(aggregate_scores(df, level="image")) == 6


def test_rollup_errors():
    df = _images()
    with pytest.raises(StatsInputError, match="missing column"):
        aggregate_scores(df.drop(columns=["laterality"]), level="breast")
    with pytest.raises(StatsInputError, match="level"):
        aggregate_scores(df, level="patient")
    bad = df.copy()
    bad.loc[0, "study_id"] = None
    with pytest.raises(StatsInputError, match="missing key"):
        aggregate_scores(bad, level="exam")


def test_age_bands():
    assert age_bands([39, 40, 49.5, 50, 69, 70, None]).tolist() == ["<40", "40-49", "40-49", "50-59", "60-69", ">=70", "unknown"]
    assert age_bands([55], bins=(50, 60)).tolist() == ["50-59"]
    with pytest.raises(StatsInputError):
        age_bands([1], bins=(60, 50))


def test_subgroups_and_heterogeneity():
    rng = np.random.default_rng(0)
    n = 900
    g = rng.choice(["GE", "Hologic", "Siemens"], n)
    y = rng.integers(0, 2, n)
    shift = np.where(g == "Siemens", 0.2, 1.5)  # Siemens much worse
    df = pd.DataFrame({"y": y, "s": rng.normal(size=n) + shift * y, "man": g, "age": rng.uniform(40, 80, n)})
    r = subgroup_analysis(df, truth="y", score="s", by="man")
    t = r.table.set_index("group")
    for grp in ("GE", "Hologic", "Siemens"):
        m = df.man == grp
        ref = auc_ci(df.y[m], df.s[m])
        assert t.loc[grp, "auc"] == pytest.approx(ref.auc)
        assert t.loc[grp, "ci_low"] == pytest.approx(ref.ci_low)
    assert r.p < 1e-4 and r.df == 2
    # Cochran Q by hand
    w = 1 / t["se"] ** 2
    pooled = (w * t["auc"]).sum() / w.sum()
    q = (w * (t["auc"] - pooled) ** 2).sum()
    assert r.q == pytest.approx(q)
    assert r.p == pytest.approx(st.chi2.sf(q, 2))
    a = subgroup_analysis(df, truth="y", score="s", by="age", bins=(50, 60, 70))
    assert a.table["group"].tolist() == ["<50", "50-59", "60-69", ">=70"]
    assert a.table["n"].sum() == n


def test_small_and_single_class_groups_warn_not_crash():
    df = pd.DataFrame({
        "y": [0, 1] * 20 + [0, 0, 0] + [1, 0],
        "s": np.linspace(0, 1, 45),
        "site": ["A"] * 40 + ["B"] * 3 + ["C"] * 2,
    })
    r = subgroup_analysis(df, truth="y", score="s", by="site", min_n=5)
    t = r.table.set_index("group")
    assert t.loc["B", "note"] == "single class" and np.isnan(t.loc["B", "auc"])
    assert t.loc["C", "note"] == "too small"
    assert len(r.warnings) >= 3  # B, C and "fewer than two evaluable groups"
    assert np.isnan(r.q)
    d = r.to_dict()
    assert d["heterogeneity"]["test"] == "cochran_q" and len(d["groups"]) == 3


def test_cochran_q_identical_groups():
    q, dof, p = cochran_q([0.8, 0.8, 0.8], [0.02, 0.03, 0.04])
    assert q == pytest.approx(0.0) and dof == 2 and p == pytest.approx(1.0)


def test_zero_variance_group_stays_in_cochran_q():
    """A perfectly separated group (AUC 1, DeLong SE 0) is in the test, corrected, and said so."""
    from mammolens.stats import hanley_mcneil_se

    rng = np.random.default_rng(3)
    rows = []
    for grp, n in (("A", 60), ("B", 60), ("C", 24)):
        y = np.array([0, 1] * (n // 2))
        s = rng.normal(size=n) + 1.0 * y
        if grp == "C":
            s = y + rng.uniform(0, 0.5, n)  # perfect separation
        rows.append(pd.DataFrame({"y": y, "s": s, "g": grp}))
    df = pd.concat(rows, ignore_index=True)
    r = subgroup_analysis(df, truth="y", score="s", by="g")
    t = r.table.set_index("group")
    assert t.loc["C", "auc"] == 1.0 and t.loc["C", "se"] == 0.0
    assert r.df == 2  # three groups, not two
    assert bool(t["in_q"].all())
    pairs = 12 * 12
    a_cc = (pairs + 0.5) / (pairs + 1)
    assert t.loc["C", "auc_q"] == pytest.approx(a_cc)
    assert t.loc["C", "se_q"] == pytest.approx(hanley_mcneil_se(a_cc, 12, 12))
    q, dof, p = cochran_q(t["auc_q"], t["se_q"])
    assert r.q == pytest.approx(q) and dof == 2
    d = r.to_dict()["heterogeneity"]
    assert [c["group"] for c in d["corrected"]] == ["C"] and d["n_groups_tested"] == 3
    assert any("zero DeLong variance" in w for w in r.warnings)


def test_excluded_groups_are_listed():
    df = pd.DataFrame({"y": [0, 1] * 20 + [0, 0, 0], "s": np.linspace(0, 1, 43), "site": ["A"] * 40 + ["B"] * 3})
    d = subgroup_analysis(df, truth="y", score="s", by="site").to_dict()["heterogeneity"]
    assert d["excluded"] == [{"group": "B", "reason": "single class", "n": 3, "n_pos": 0, "n_neg": 3}]


def test_cochran_q_refuses_zero_se():
    with pytest.raises(StatsInputError, match="without a finite positive standard error"):
        cochran_q([0.8, 1.0, 0.7], [0.05, 0.0, 0.04])


def test_hanley_mcneil_se_matches_formula():
    from mammolens.stats import hanley_mcneil_se

    a, n1, n0 = 0.8, 30, 50
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    ref = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert hanley_mcneil_se(a, n1, n0) == pytest.approx(ref)
    assert hanley_mcneil_se(1.0, n1, n0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(StatsInputError):
        hanley_mcneil_se(1.2, n1, n0)


def test_contralateral_values_pair_the_same_view_of_the_other_breast():
    from mammolens.stats.levels import contralateral_values

    df = pd.DataFrame({
        "patient_id": ["p1"] * 4 + ["p2"],
        "study_id": ["s1"] * 4 + ["s2"],
        "laterality": ["L", "L", "R", "r", "L"],
        "view": ["CC", "MLO", "CC", "MLO", "CC"],
        "logit": [1.0, 2.0, 3.0, 4.0, 5.0],
    })
    got = contralateral_values(df)
    assert got.tolist()[:4] == [3.0, 4.0, 1.0, 2.0]
    assert np.isnan(got.iloc[4])  # p2 has no right breast


def test_contralateral_difference_score_in_predict():
    from mammolens.predict.api import add_contralateral

    df = pd.DataFrame({"patient_id": ["a", "a", "b"], "study_id": ["1", "1", "2"], "laterality": ["L", "R", "L"],
                       "view": ["MLO", "MLO", "MLO"], "logit": [2.0, 0.5, 1.0], "score": [0.0, 0.0, 0.0]})
    off = add_contralateral(df)
    assert off["score"].tolist() == [0.0, 0.0, 0.0] and off["contralateral_logit"].tolist()[:2] == [0.5, 2.0]
    on = add_contralateral(df, weight=0.5)
    assert on["score"].iloc[0] == pytest.approx(1 / (1 + np.exp(-(2.0 - 0.25))))
    assert on["score"].iloc[1] == pytest.approx(1 / (1 + np.exp(-(0.5 - 1.0))))
    assert on["score"].iloc[2] == 0.0  # no partner: its own score is kept
