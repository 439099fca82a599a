"""MRMC (Obuchowski-Rockette, DBM) against RJafroc's published analysis of the Van Dyke data.

Reference: Chakraborty DP, "The RJafroc Book" (github.com/dpc10ster/RJafrocBook,
docs/10C-OR-AnalysisApplications.md, "Hand calculation" and "RJafroc: dataset02"):
``StSignificanceTesting(dataset02, FOM = "Wilcoxon", method = "OR")`` prints
foms trt0 0.9196 0.8588 0.9039 0.9731 0.8298 / trt1 0.9478 0.9053 0.9217 0.9994 0.9300;
trtMeans 0.8970 0.9408; VarCom Var 0.0008023, Cov1 0.0003466, Cov2 0.0003441,
Cov3 0.0002390; TRanova MS T 0.004796, R 0.003836, TR 0.000551;
RRRC F 4.456, ddf 15.26, p 0.05167, CI of trt0-trt1 (-0.0879595, 0.0003589), per-treatment
CIs 0.8252-0.9689 (df 12.74) and 0.8941-0.9875 (df 12.71);
FRRC chisq 5.476, p 0.01928, CI (-0.08049, -0.007115), per-treatment CIs 0.8494-0.9446 and
0.9080-0.9737; RRFC F 8.704, p 0.04196, CI (-0.08502, -0.00258).
DBM with the jackknife reproduces OR-jackknife RRRC exactly (Hillis et al. 2005), so the
same RRRC numbers are expected from ``method="dbm"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammolens.stats import StatsInputError, ai_vs_readers, delong_test, mrmc

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def vd() -> pd.DataFrame:
    d = pd.read_csv(DATA / "vandyke_dataset02.csv")
    assert d.shape == (1140, 5)
    return d


def test_per_reader_aucs(vd):
    r = mrmc(vd)
    w = r.reader_aucs.pivot(index="modality", columns="reader", values="auc").to_numpy()
    np.testing.assert_allclose(w[0], [0.9196, 0.8588, 0.9039, 0.9731, 0.8298], atol=5e-5)
    np.testing.assert_allclose(w[1], [0.9478, 0.9053, 0.9217, 0.9994, 0.9300], atol=5e-5)
    assert w[0, 1] == pytest.approx(0.8587762, abs=1e-7)


@pytest.mark.parametrize("method", ["or", "dbm"])
def test_rrrc_matches_rjafroc(vd, method):
    r = mrmc(vd, method=method, covariance="jackknife", analysis="rrrc")
    assert r.f == pytest.approx(4.456, abs=5e-4)
    assert r.ddf == pytest.approx(15.26, abs=5e-3)
    assert r.p_value == pytest.approx(0.05167, abs=5e-6)
    assert r.difference == pytest.approx(-0.0438, abs=5e-5)
    assert r.ci_low == pytest.approx(-0.0879595, abs=1e-7)
    assert r.ci_high == pytest.approx(0.0003589, abs=1e-7)
    m = r.modality_aucs
    assert m["auc"].tolist() == pytest.approx([0.8970, 0.9408], abs=5e-5)
    assert m["ci_low"].tolist() == pytest.approx([0.8252, 0.8941], abs=5e-5)
    assert m["ci_high"].tolist() == pytest.approx([0.9689, 0.9875], abs=5e-5)
    assert m["df"].tolist() == pytest.approx([12.74, 12.71], abs=5e-3)
    assert m["se"].tolist() == pytest.approx([0.03317, 0.02157], abs=5e-6)


def test_or_variance_components_match_rjafroc(vd):
    c = mrmc(vd).components
    assert c["var"] == pytest.approx(0.00080228827, abs=1e-11)
    assert c["cov1"] == pytest.approx(0.00034661371, abs=1e-11)
    assert c["cov2"] == pytest.approx(0.00034407483, abs=1e-11)
    assert c["cov3"] == pytest.approx(0.00023902837, abs=1e-11)
    assert c["ms_t"] == pytest.approx(0.0047962, abs=1e-7)
    assert c["ms_tr"] == pytest.approx(5.5103062e-4, abs=1e-11)


def test_frrc_and_rrfc_match_rjafroc(vd):
    f = mrmc(vd, analysis="frrc")
    assert f.f * 1 == pytest.approx(5.47595324, abs=1e-7)  # chi-square on 1 df
    assert f.p_value == pytest.approx(0.01928, abs=5e-6)
    assert (f.ci_low, f.ci_high) == pytest.approx((-0.08049, -0.007115), abs=5e-6)
    assert f.modality_aucs["ci_low"].tolist() == pytest.approx([0.8494, 0.9080], abs=5e-5)
    assert f.modality_aucs["ci_high"].tolist() == pytest.approx([0.9446, 0.9737], abs=5e-5)
    g = mrmc(vd, analysis="rrfc")
    assert g.f == pytest.approx(8.704, abs=5e-4)
    assert g.ddf == 4
    assert g.p_value == pytest.approx(0.04196, abs=5e-6)
    assert (g.ci_low, g.ci_high) == pytest.approx((-0.08502, -0.00258), abs=5e-6)
    assert g.modality_aucs["ci_low"].tolist() == pytest.approx([0.8281, 0.8960], abs=5e-5)


def test_delong_covariance_single_reader_equals_paired_delong(vd):
    one = vd[vd.reader == 4]
    r = mrmc(one, covariance="delong", analysis="frrc")
    y = one[one.modality == 0].sort_values("case")["truth"].to_numpy()
    a = one[one.modality == 0].sort_values("case")["score"].to_numpy()
    b = one[one.modality == 1].sort_values("case")["score"].to_numpy()
    c = delong_test(y, a, b)
    assert r.f == pytest.approx(c.z**2, rel=1e-10)
    assert r.p_value == pytest.approx(c.p_value, rel=1e-10)
    assert r.ci_low == pytest.approx(c.ci_low, rel=1e-10)


def test_delong_covariance_close_to_jackknife(vd):
    d = mrmc(vd, covariance="delong")
    j = mrmc(vd, covariance="jackknife")
    assert d.f == pytest.approx(j.f, rel=0.02)
    assert d.p_value == pytest.approx(j.p_value, abs=0.002)


def test_result_to_dict_keys(vd):
    d = mrmc(vd).to_dict()
    assert {"difference", "ci_low", "ci_high", "f", "ddf", "p_value", "modalities", "reader_aucs"} <= set(d)
    assert {"auc", "ci_low", "ci_high"} <= set(d["modalities"][0])


def test_ai_vs_readers(vd):
    readers = vd[vd.modality == 0]
    rng = np.random.default_rng(0)
    cases = readers.drop_duplicates("case")
    ai = pd.DataFrame({"case": cases["case"], "score": cases["truth"] * 1.5 + rng.normal(size=len(cases))})
    r = ai_vs_readers(readers, ai)
    assert r.reader_mean_auc == pytest.approx(0.8970, abs=5e-5)
    assert len(r.per_reader) == 5
    assert r.ci_low < r.difference < r.ci_high
    # the per-reader comparisons are paired DeLong tests
    y = cases.sort_values("case")["truth"].to_numpy()
    s0 = readers[readers.reader == 0].sort_values("case")["score"].to_numpy()
    c = delong_test(y, s0, ai.sort_values("case")["score"].to_numpy())
    assert r.per_reader.iloc[0]["p_value"] == pytest.approx(c.p_value)
    with pytest.raises(StatsInputError, match="no AI score"):
        ai_vs_readers(readers, ai.iloc[:-1])


def test_bad_designs_raise(vd):
    with pytest.raises(StatsInputError, match="duplicate"):
        mrmc(pd.concat([vd, vd.iloc[:1]]))
    with pytest.raises(StatsInputError, match="not fully crossed"):
        mrmc(vd.drop(index=vd.index[(vd.reader == 2) & (vd.case == 5) & (vd.modality == 1)]))
    bad = vd.copy()
    bad.loc[(bad.case == 3) & (bad.reader == 1), "truth"] = 1
    with pytest.raises(StatsInputError, match="truth differs"):
        mrmc(bad)
    bad = vd.copy()
    bad.loc[0, "truth"] = 2
    with pytest.raises(StatsInputError, match="0/1"):
        mrmc(bad)
    bad = vd.copy()
    bad.loc[0, "score"] = np.nan
    with pytest.raises(StatsInputError, match="NaN"):
        mrmc(bad)
    with pytest.raises(StatsInputError, match="missing column"):
        mrmc(vd.rename(columns={"score": "rating"}))
    with pytest.raises(StatsInputError, match="one class"):
        mrmc(vd[vd.truth == 1])
    with pytest.raises(StatsInputError, match="at least 2 readers"):
        mrmc(vd[vd.reader == 0])


def test_ties_everywhere_is_a_clear_error(vd):
    flat = vd.assign(score=1.0)
    for method in ("or", "dbm"):
        with pytest.raises(StatsInputError, match="error term"):
            mrmc(flat, method=method)


def test_speed_10_readers_10k_cases():
    import time

    rng = np.random.default_rng(0)
    K, J = 10_000, 10
    y = (rng.random(K) < 0.3).astype(int)
    reads = pd.concat([
        pd.DataFrame({"reader": j, "case": np.arange(K), "modality": m, "truth": y, "score": rng.normal(size=K) + y * (1 + 0.1 * m)})
        for m in range(2) for j in range(J)
    ])
    t = time.perf_counter()
    r = mrmc(reads, covariance="delong")
    assert time.perf_counter() - t < 5.0
    assert r.p_value < 0.05


def test_dbm_mean_squares_and_tests_match_rjafroc_book(vd):
    """RJafrocBook docs/09B-DBM-Analysis-SigTesting.md (dataset02, Wilcoxon):
    UtilMeanSquares: msT 0.5467634, msR 0.4373268, msC 0.3968699, msTR 0.06281749,
    msTC 0.09984808, msRC 0.06450106, msTRC 0.0399716; StSignificanceTesting(method =
    "DBM") RRRC: F 4.4563187, ddf 15.259675, p 0.051665686, CI (-0.087959499,
    0.00035885444); FRRC: F = MST/MSTC on (I-1, (I-1)(K-1)) df."""
    r = mrmc(vd, method="dbm")
    c = r.components
    expected = {"ms_t": 0.5467634, "ms_r": 0.4373268, "ms_c": 0.3968699, "ms_tr": 0.06281749,
                "ms_tc": 0.09984808, "ms_rc": 0.06450106, "ms_trc": 0.0399716}
    for k, v in expected.items():
        assert c[f"dbm_{k}"] == pytest.approx(v, abs=5e-8), k
    assert r.f == pytest.approx(4.4563187, abs=1e-7)
    assert r.ddf == pytest.approx(15.259675, abs=1e-6)
    assert r.p_value == pytest.approx(0.051665686, abs=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx((-0.087959499, 0.00035885444), abs=1e-9)
    f = mrmc(vd, method="dbm", analysis="frrc")
    assert f.f == pytest.approx(0.5467634 / 0.09984808, rel=1e-6)
    assert f.ddf == 113
