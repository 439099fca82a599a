# ruff: noqa: E741  (I, J, K: modalities, readers, cases, the notation of the MRMC literature)
"""Multi-reader multi-case (MRMC) ROC analysis of reader studies.

Input is the iMRMC long format: one row per (reader, case, modality) with the case's
truth (0/1) and the reader's score (rating or probability). The design must be fully
crossed (every reader reads every case in every modality); anything else is an error.
The figure of merit is the empirical (trapezoidal / Wilcoxon) AUC of each reader in each
modality.

Methods
-------
``method="or"``: Obuchowski-Rockette (1995) with Hillis' (2007, 2008) denominator degrees
of freedom. The error covariance matrix of the reader x modality AUCs is estimated with
the DeLong method (``covariance="delong"``) or the case jackknife
(``covariance="jackknife"``, as RJafroc / OR-DBM MRMC do by default). From it come
``Var`` (mean variance), ``Cov1`` (same reader, different modalities), ``Cov2`` (different
readers, same modality) and ``Cov3`` (different readers, different modalities).

* RRRC (random readers, random cases): ``F = MS(T) / (MS(TR) + J max(Cov2 - Cov3, 0))``,
  ``ddf = [MS(TR) + J max(Cov2 - Cov3, 0)]^2 / {MS(TR)^2 / [(I-1)(J-1)]}``.
* FRRC (fixed readers): ``X^2 = (I-1) MS(T) / [Var - Cov1 + (J-1) max(Cov2 - Cov3, 0)]``
  on ``I-1`` df (reported as ``F = X^2/(I-1)`` with infinite ``ddf``); normal-based CIs.
* RRFC (fixed cases): ``F = MS(T) / MS(TR)`` on ``(I-1, (I-1)(J-1))`` df.

``method="dbm"``: Dorfman-Berbaum-Metz (1992) ANOVA of (Hillis-centred) jackknife
pseudovalues with Hillis' ddf (Hillis et al. 2005). With the jackknife the DBM RRRC test
equals OR-jackknife exactly (Hillis 2005); FRRC uses ``MS(T)/MS(TC)`` on
``(I-1, (I-1)(K-1))`` df.

AI versus readers (:func:`ai_vs_readers`): each reader against the AI by the paired DeLong
test, and the reader-averaged AUC against the AI's by the single-modality
Obuchowski-Rockette method with the AI as a fixed reader (Chakraborty & Hillis; RJafroc's
``StSignificanceTestingCadVsRad(method = "1T-RRRC")``): the per-reader differences
``D_j = AUC_j - AUC_AI`` are analysed as one modality, with
``SE^2 = [MS_R(D) + J max(Cov2(D), 0)] / J`` and Hillis' ``df = [MS_R(D) + J max(Cov2(D),
0)]^2 / [MS_R(D)^2 / (J-1)]``; ``Cov2(D)`` comes from the DeLong (or jackknife) covariance
of all readers' and the AI's AUCs.

References
----------
.. [1] Obuchowski NA, Rockette HE. Hypothesis testing of diagnostic accuracy for multiple
   readers and multiple tests: an ANOVA approach with dependent observations. Commun Stat
   Simul Comput 1995;24:285-308.
.. [2] Hillis SL. A comparison of denominator degrees of freedom methods for multiple
   observer ROC analysis. Stat Med 2007;26:596-619.
.. [3] Hillis SL, Berbaum KS, Metz CE. Recent developments in the Dorfman-Berbaum-Metz
   procedure for multireader ROC study analysis. Acad Radiol 2008;15:647-661.
.. [4] Dorfman DD, Berbaum KS, Metz CE. Receiver operating characteristic rating analysis:
   generalization to the population of readers and patients with the jackknife method.
   Invest Radiol 1992;27:723-731.
.. [5] Hillis SL, Obuchowski NA, Schartz KM, Berbaum KS. A comparison of the
   Dorfman-Berbaum-Metz and Obuchowski-Rockette methods for receiver operating
   characteristic (ROC) data. Stat Med 2005;24:1579-1607.
.. [6] Chakraborty DP. Observer Performance Methods for Diagnostic Imaging. CRC Press 2017
   (RJafroc; chapter on CAD vs radiologists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from mammolens.stats._validate import (
    StatsInputError,
    check_alpha,
    check_choice,
    check_columns,
    check_scores,
    check_truth,
)
from mammolens.stats.roc import _delong_cov, _delong_placements, delong_test


@dataclass(frozen=True)
class MRMCResult:
    """Result of an MRMC analysis (see the module docstring for the formulas)."""

    method: str
    covariance: str
    analysis: str
    alpha: float
    modalities: list[Any]
    readers: list[Any]
    n_cases: int
    n_pos: int
    n_neg: int
    reader_aucs: pd.DataFrame  # reader, modality, auc
    modality_aucs: pd.DataFrame  # modality, auc, se, df, ci_low, ci_high
    comparisons: pd.DataFrame  # modality_a, modality_b, difference, se, df, statistic, p_value, ci_low, ci_high
    f: float
    ndf: float
    ddf: float
    p_value: float
    components: dict[str, float] = field(default_factory=dict)

    @property
    def difference(self) -> float:
        return float(self.comparisons["difference"].iloc[0]) if len(self.comparisons) else float("nan")

    @property
    def ci_low(self) -> float:
        return float(self.comparisons["ci_low"].iloc[0]) if len(self.comparisons) else float("nan")

    @property
    def ci_high(self) -> float:
        return float(self.comparisons["ci_high"].iloc[0]) if len(self.comparisons) else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "covariance": self.covariance,
            "analysis": self.analysis,
            "alpha": self.alpha,
            "n_readers": len(self.readers),
            "n_cases": self.n_cases,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "reader_aucs": _records(self.reader_aucs),
            "modalities": _records(self.modality_aucs),
            "comparisons": _records(self.comparisons),
            "difference": self.difference,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "f": self.f,
            "ndf": self.ndf,
            "ddf": self.ddf,
            "p_value": self.p_value,
            "components": dict(self.components),
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in df.to_dict("records")]


# --------------------------------------------------------------------------- input
@dataclass
class _Study:
    X: np.ndarray  # (I, J, K) scores
    y: np.ndarray  # (K,) truth
    modalities: list[Any]
    readers: list[Any]
    cases: list[Any]


def _to_study(df: pd.DataFrame, *, reader: str, case: str, modality: str, truth: str, score: str) -> _Study:
    if not isinstance(df, pd.DataFrame):
        raise StatsInputError("mrmc: expected a pandas DataFrame in long format")
    check_columns(df, [reader, case, modality, truth, score], what="mrmc input")
    for c in (reader, case, modality):
        if df[c].isna().any():
            raise StatsInputError(f"column {c!r}: {int(df[c].isna().sum())} missing value(s)")
    s = check_scores(df[score], name=f"column {score!r}")
    t = check_truth(df[truth], name=f"column {truth!r}")
    d = pd.DataFrame({"r": df[reader].to_numpy(), "c": df[case].to_numpy(), "m": df[modality].to_numpy(), "t": t, "s": s})
    dup = d.duplicated(["r", "c", "m"])
    if dup.any():
        ex = d.loc[dup, ["r", "c", "m"]].iloc[0].tolist()
        raise StatsInputError(
            f"{int(dup.sum())} duplicate (reader, case, modality) row(s), e.g. {reader}={ex[0]!r}, {case}={ex[1]!r}, {modality}={ex[2]!r}"
        )
    tcase = d.groupby("c")["t"].nunique()
    if (tcase > 1).any():
        raise StatsInputError(f"column {truth!r}: truth differs between rows of the same case (e.g. case {tcase[tcase > 1].index[0]!r})")
    modalities = sorted(d["m"].unique().tolist(), key=str)
    readers = sorted(d["r"].unique().tolist(), key=str)
    cases = sorted(d["c"].unique().tolist(), key=str)
    if len(modalities) < 1 or len(readers) < 1:
        raise StatsInputError("mrmc: no readers or modalities")
    expected = len(modalities) * len(readers) * len(cases)
    if len(d) != expected:
        counts = d.groupby(["m", "r"]).size()
        bad = counts[counts != len(cases)]
        if len(bad):
            (m0, r0), n0 = bad.index[0], int(bad.iloc[0])
            msg = f"reader {r0!r} in modality {m0!r} read {n0} of the {len(cases)} cases"
        else:
            missing = set(modalities) - set(d["m"]) or set(readers) - set(d["r"])
            msg = f"missing combinations {sorted(missing, key=str)[:5]}"
        raise StatsInputError(
            f"mismatched case sets across readers/modalities (design not fully crossed: {msg}); "
            "every reader must read every case in every modality"
        )
    mi = {v: i for i, v in enumerate(modalities)}
    ri = {v: i for i, v in enumerate(readers)}
    ci = {v: i for i, v in enumerate(cases)}
    X = np.empty((len(modalities), len(readers), len(cases)))
    X[d["m"].map(mi).to_numpy(), d["r"].map(ri).to_numpy(), d["c"].map(ci).to_numpy()] = d["s"].to_numpy()
    y = np.zeros(len(cases), dtype=np.int8)
    y[d["c"].map(ci).to_numpy()] = d["t"].to_numpy()
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise StatsInputError(f"column {truth!r}: only one class among the cases; AUC is undefined")
    return _Study(X, y, modalities, readers, cases)


# --------------------------------------------------------------------------- core
def _aucs_and_cov(X2: np.ndarray, y: np.ndarray, covariance: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """AUCs of the rows of ``X2`` (p, K), their covariance, and jackknife AUCs (p, K)."""
    aucs, v10, v01 = _delong_placements(y, X2)
    m, n = v10.shape[1], v01.shape[1]
    K = y.size
    # leave-one-case-out AUCs from the placements (exact): removing a positive k gives
    # (m AUC - v10_k) / (m - 1), removing a negative l gives (n AUC - v01_l) / (n - 1)
    jk = np.empty((X2.shape[0], K))
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        jk[:, pos] = (m * aucs[:, None] - v10) / (m - 1)
        jk[:, neg] = (n * aucs[:, None] - v01) / (n - 1)
    if covariance == "delong":
        cov = _delong_cov(v10, v01)
    else:
        if m < 2 or n < 2:
            raise StatsInputError("the jackknife needs at least 2 positive and 2 negative cases")
        d = jk - jk.mean(axis=1, keepdims=True)
        cov = (K - 1) / K * (d @ d.T)
    return aucs, cov, jk


def _or_components(theta: np.ndarray, cov: np.ndarray) -> dict[str, Any]:
    I, J = theta.shape
    C = cov.reshape(I, J, I, J)
    same_r = np.eye(J, dtype=bool)
    same_m = np.eye(I, dtype=bool)
    diag = np.einsum("ijij->ij", C)
    mask1 = (~same_m)[:, None, :, None] & same_r[None, :, None, :]
    mask2 = same_m[:, None, :, None] & (~same_r)[None, :, None, :]
    mask3 = (~same_m)[:, None, :, None] & (~same_r)[None, :, None, :]
    var = float(diag.mean())
    cov1 = float(C[mask1].mean()) if mask1.any() else 0.0
    cov2 = float(C[mask2].mean()) if mask2.any() else 0.0
    cov3 = float(C[mask3].mean()) if mask3.any() else 0.0
    tm = theta.mean(axis=1)
    rm = theta.mean(axis=0)
    g = theta.mean()
    ms_t = J * np.sum((tm - g) ** 2) / (I - 1) if I > 1 else float("nan")
    ms_r = I * np.sum((rm - g) ** 2) / (J - 1) if J > 1 else float("nan")
    ms_tr = (
        np.sum((theta - tm[:, None] - rm[None, :] + g) ** 2) / ((I - 1) * (J - 1)) if I > 1 and J > 1 else float("nan")
    )
    # per modality: mean square over readers, variance and Cov2 within the modality
    ms_r_i = theta.var(axis=1, ddof=1) if J > 1 else np.full(I, np.nan)
    var_i = diag.mean(axis=1)
    cov2_i = np.array([C[i, :, i, :][~same_r].mean() if J > 1 else 0.0 for i in range(I)])
    return {
        "var": var, "cov1": cov1, "cov2": cov2, "cov3": cov3, "ms_t": float(ms_t), "ms_r": float(ms_r),
        "ms_tr": float(ms_tr), "ms_r_i": ms_r_i, "var_i": var_i, "cov2_i": cov2_i,
    }


def _dbm_components(theta: np.ndarray, jk: np.ndarray) -> dict[str, Any]:
    I, J, K = jk.shape
    Y = K * theta[:, :, None] - (K - 1) * jk
    Y = Y + (theta - Y.mean(axis=2))[:, :, None]  # Hillis centring
    g = Y.mean()
    yi = Y.mean(axis=(1, 2))
    yj = Y.mean(axis=(0, 2))
    yk = Y.mean(axis=(0, 1))
    yij = Y.mean(axis=2)
    yik = Y.mean(axis=1)
    yjk = Y.mean(axis=0)
    ms = {}
    ms["ms_t"] = J * K * np.sum((yi - g) ** 2) / (I - 1) if I > 1 else np.nan
    ms["ms_r"] = I * K * np.sum((yj - g) ** 2) / (J - 1) if J > 1 else np.nan
    ms["ms_c"] = I * J * np.sum((yk - g) ** 2) / (K - 1)
    ms["ms_tr"] = K * np.sum((yij - yi[:, None] - yj[None, :] + g) ** 2) / ((I - 1) * (J - 1)) if I > 1 and J > 1 else np.nan
    ms["ms_tc"] = J * np.sum((yik - yi[:, None] - yk[None, :] + g) ** 2) / ((I - 1) * (K - 1)) if I > 1 else np.nan
    ms["ms_rc"] = I * np.sum((yjk - yj[:, None] - yk[None, :] + g) ** 2) / ((J - 1) * (K - 1)) if J > 1 else np.nan
    resid = Y - yij[:, :, None] - yik[:, None, :] - yjk[None, :, :] + yi[:, None, None] + yj[None, :, None] + yk[None, None, :] - g
    ms["ms_trc"] = np.sum(resid**2) / ((I - 1) * (J - 1) * (K - 1)) if I > 1 and J > 1 else np.nan
    # per modality (single-treatment DBM)
    ms_r_i, ms_c_i, ms_rc_i = [], [], []
    for i in range(I):
        Yi = Y[i]
        gi = Yi.mean()
        rj = Yi.mean(axis=1)
        ck = Yi.mean(axis=0)
        ms_r_i.append(K * np.sum((rj - gi) ** 2) / (J - 1) if J > 1 else np.nan)
        ms_c_i.append(J * np.sum((ck - gi) ** 2) / (K - 1))
        ms_rc_i.append(np.sum((Yi - rj[:, None] - ck[None, :] + gi) ** 2) / ((J - 1) * (K - 1)) if J > 1 else np.nan)
    ms["ms_r_i"] = np.array(ms_r_i)
    ms["ms_c_i"] = np.array(ms_c_i)
    ms["ms_rc_i"] = np.array(ms_rc_i)
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in ms.items()}


def mrmc(
    df: pd.DataFrame,
    *,
    reader: str = "reader",
    case: str = "case",
    modality: str = "modality",
    truth: str = "truth",
    score: str = "score",
    method: str = "or",
    covariance: str = "jackknife",
    analysis: str = "rrrc",
    alpha: float = 0.05,
) -> MRMCResult:
    """Multi-reader multi-case analysis of a fully crossed ROC reader study.

    Parameters
    ----------
    df : pandas.DataFrame
        Long format (iMRMC): columns ``reader, case, modality, truth, score``.
    reader, case, modality, truth, score : str
        Column names.
    method : {"or", "dbm"}
        Obuchowski-Rockette or Dorfman-Berbaum-Metz (both with Hillis' ddf).
    covariance : {"jackknife", "delong"}
        Error covariance estimator for ``method="or"`` (DBM always uses the jackknife).
    analysis : {"rrrc", "frrc", "rrfc"}
        Random readers and cases; fixed readers; fixed cases.
    alpha : float
        1 - confidence level of all intervals.

    Returns
    -------
    MRMCResult
        Per-reader AUCs, each modality's reader-averaged AUC with CI, pairwise differences
        (first modality minus second, modalities in sorted order) with CIs, and the overall
        F test (``f, ndf, ddf, p_value``). With one modality only the AUC CIs are given
        (F and p are NaN).

    Raises
    ------
    StatsInputError
        Missing columns, duplicate (reader, case, modality) rows, a design that is not
        fully crossed, truth that differs within a case or is not binary, non-finite
        scores, a single class.
    """
    check_choice(method, ("or", "dbm"), name="method")
    check_choice(covariance, ("delong", "jackknife"), name="covariance")
    check_choice(analysis, ("rrrc", "frrc", "rrfc"), name="analysis")
    alpha = check_alpha(alpha)
    st = _to_study(df, reader=reader, case=case, modality=modality, truth=truth, score=score)
    I, J, K = st.X.shape
    if method == "dbm":
        covariance = "jackknife"
    if analysis in ("rrrc", "rrfc") and J < 2:
        raise StatsInputError(f"analysis={analysis!r} treats readers as random and needs at least 2 readers (got {J})")
    aucs, cov, jk = _aucs_and_cov(st.X.reshape(I * J, K), st.y, covariance)
    theta = aucs.reshape(I, J)
    tm = theta.mean(axis=1)
    orc = _or_components(theta, cov)
    comps: dict[str, float] = {k: float(v) for k, v in orc.items() if np.ndim(v) == 0}
    zc = _st.norm.ppf(1 - alpha / 2)

    # ---- per-modality reader-averaged AUC CIs, and the error term of the test
    if method == "or":
        if analysis == "rrrc":
            den_i = orc["ms_r_i"] + J * np.maximum(orc["cov2_i"], 0)
            se_i = np.sqrt(den_i / J)
            df_i = np.array([_safe_div(a, b) for a, b in zip(den_i**2, orc["ms_r_i"] ** 2 / (J - 1), strict=True)])
            den = orc["ms_tr"] + J * max(orc["cov2"] - orc["cov3"], 0.0) if I > 1 else np.nan
            ddf = _safe_div(den**2, orc["ms_tr"] ** 2 / ((I - 1) * (J - 1))) if I > 1 else np.nan
            se_d = np.sqrt(2 * den / J) if I > 1 else np.nan
        elif analysis == "frrc":
            se_i = np.sqrt((orc["var_i"] + (J - 1) * np.maximum(orc["cov2_i"], 0)) / J)
            df_i = np.full(I, np.inf)
            den = orc["var"] - orc["cov1"] + (J - 1) * max(orc["cov2"] - orc["cov3"], 0.0) if I > 1 else np.nan
            ddf = np.inf
            se_d = np.sqrt(2 * den / J) if I > 1 else np.nan
        else:  # rrfc
            se_i = np.sqrt(orc["ms_r_i"] / J)
            df_i = np.full(I, J - 1.0)
            den = orc["ms_tr"] if I > 1 else np.nan
            ddf = float((I - 1) * (J - 1)) if I > 1 else np.nan
            se_d = np.sqrt(2 * den / J) if I > 1 else np.nan
        f = orc["ms_t"] / den if I > 1 and den > 0 else np.nan
    else:  # dbm
        assert jk is not None
        dbm = _dbm_components(theta, jk.reshape(I, J, K))
        comps.update({f"dbm_{k}": float(v) for k, v in dbm.items() if np.ndim(v) == 0})
        if analysis == "rrrc":
            den_i = dbm["ms_r_i"] + np.maximum(dbm["ms_c_i"] - dbm["ms_rc_i"], 0)
            se_i = np.sqrt(den_i / (J * K))
            df_i = np.array([_safe_div(a, b) for a, b in zip(den_i**2, dbm["ms_r_i"] ** 2 / (J - 1), strict=True)])
            den = dbm["ms_tr"] + max(dbm["ms_tc"] - dbm["ms_trc"], 0.0) if I > 1 else np.nan
            ddf = _safe_div(den**2, dbm["ms_tr"] ** 2 / ((I - 1) * (J - 1))) if I > 1 else np.nan
        elif analysis == "frrc":
            se_i = np.sqrt(dbm["ms_c_i"] / (J * K))
            df_i = np.full(I, K - 1.0)
            den = dbm["ms_tc"] if I > 1 else np.nan
            ddf = float((I - 1) * (K - 1)) if I > 1 else np.nan
        else:
            se_i = np.sqrt(dbm["ms_r_i"] / (J * K))
            df_i = np.full(I, J - 1.0)
            den = dbm["ms_tr"] if I > 1 else np.nan
            ddf = float((I - 1) * (J - 1)) if I > 1 else np.nan
        se_d = np.sqrt(2 * den / (J * K)) if I > 1 else np.nan
        f = dbm["ms_t"] / den if I > 1 and den > 0 else np.nan

    if I > 1 and not (np.isfinite(den) and den > 0):
        raise StatsInputError(
            "the error term of the test is zero (no reader or case variability: identical or "
            "perfectly separating ratings?); the MRMC test is undefined"
        )
    if not np.isfinite(ddf) and analysis == "rrrc":
        ddf = np.inf  # MS(TR) = 0: Hillis' ddf is infinite, the F test becomes a chi-square test

    def crit(d: float) -> float:
        return float(zc) if not np.isfinite(d) else float(_st.t.ppf(1 - alpha / 2, d))

    mod_rows = []
    for i, mname in enumerate(st.modalities):
        q = crit(float(df_i[i]))
        mod_rows.append({
            "modality": mname, "auc": float(tm[i]), "se": float(se_i[i]), "df": float(df_i[i]),
            "ci_low": float(tm[i] - q * se_i[i]), "ci_high": float(tm[i] + q * se_i[i]),
        })
    cmp_rows = []
    if I > 1:
        q = crit(float(ddf))
        for a, b in combinations(range(I), 2):
            d = float(tm[a] - tm[b])
            stat = d / se_d if se_d > 0 else np.nan
            if np.isfinite(ddf):
                p = float(2 * _st.t.sf(abs(stat), ddf))
            else:
                p = float(2 * _st.norm.sf(abs(stat)))
            cmp_rows.append({
                "modality_a": st.modalities[a], "modality_b": st.modalities[b], "difference": d,
                "se": float(se_d), "df": float(ddf), "statistic": float(stat), "p_value": p,
                "ci_low": d - q * float(se_d), "ci_high": d + q * float(se_d),
            })
        if analysis == "frrc" and method == "or":
            p_f = float(_st.chi2.sf(f * (I - 1), I - 1))
        else:
            p_f = float(_st.f.sf(f, I - 1, ddf))
    else:
        p_f = float("nan")
    reader_rows = [
        {"reader": r, "modality": m, "auc": float(theta[i, j])}
        for i, m in enumerate(st.modalities)
        for j, r in enumerate(st.readers)
    ]
    comps["error_term"] = float(den) if I > 1 else float("nan")
    return MRMCResult(
        method=method, covariance=covariance, analysis=analysis, alpha=alpha,
        modalities=list(st.modalities), readers=list(st.readers), n_cases=K,
        n_pos=int(st.y.sum()), n_neg=int(K - st.y.sum()),
        reader_aucs=pd.DataFrame(reader_rows),
        modality_aucs=pd.DataFrame(mod_rows),
        comparisons=pd.DataFrame(cmp_rows, columns=[
            "modality_a", "modality_b", "difference", "se", "df", "statistic", "p_value", "ci_low", "ci_high",
        ]),
        f=float(f), ndf=float(I - 1), ddf=float(ddf), p_value=p_f, components=comps,
    )


def _safe_div(a: float, b: float) -> float:
    """``a / b`` with ``b == 0`` giving ``inf`` (Hillis' ddf when a mean square is 0)."""
    return float(a / b) if b > 0 else float("inf")


# --------------------------------------------------------------------------- AI vs readers
@dataclass(frozen=True)
class AIvsReadersResult:
    """The AI compared with each reader and with the readers' average AUC."""

    ai_auc: float
    reader_mean_auc: float
    difference: float  # reader average - AI
    se: float
    df: float
    t: float
    p_value: float
    ci_low: float
    ci_high: float
    per_reader: pd.DataFrame  # reader, auc_reader, auc_ai, difference, ci_low, ci_high, z, p_value
    method: str = "1T-RRRC (OR, AI as a fixed reader) + paired DeLong per reader"
    covariance: str = "delong"
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return {
            "ai_auc": self.ai_auc, "reader_mean_auc": self.reader_mean_auc, "difference": self.difference,
            "se": self.se, "df": self.df, "t": self.t, "p_value": self.p_value,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "per_reader": _records(self.per_reader),
            "method": self.method, "covariance": self.covariance, "alpha": self.alpha,
        }


def ai_vs_readers(
    df: pd.DataFrame,
    ai_scores: Any,
    *,
    reader: str = "reader",
    case: str = "case",
    truth: str = "truth",
    score: str = "score",
    modality: str | None = None,
    modality_value: Any = None,
    covariance: str = "delong",
    alpha: float = 0.05,
) -> AIvsReadersResult:
    """Compare a standalone AI with the readers of a reader study.

    Parameters
    ----------
    df : pandas.DataFrame
        Readers' scores in long format (one modality; or give ``modality`` and
        ``modality_value`` to pick e.g. the unaided reads).
    ai_scores : mapping case -> score, pandas.Series indexed by case, or DataFrame with
        columns ``case`` and ``score`` (names as ``case``/``score``)
        The AI's score for every case of the study.
    covariance : {"delong", "jackknife"}
        Covariance of the AUCs used by the reader-average comparison.

    Returns
    -------
    AIvsReadersResult
        ``per_reader``: paired DeLong test of each reader vs the AI; the top-level fields:
        reader-averaged AUC minus the AI's AUC with the single-modality OR RRRC test
        (see the module docstring), ``t`` on ``df`` degrees of freedom (Hillis).
    """
    check_choice(covariance, ("delong", "jackknife"), name="covariance")
    alpha = check_alpha(alpha)
    d = df
    if modality is not None:
        check_columns(df, [modality], what="ai_vs_readers input")
        d = df[df[modality] == modality_value]
        if d.empty:
            raise StatsInputError(f"column {modality!r}: no rows with value {modality_value!r}")
    d = d.assign(_m=0)
    st = _to_study(d, reader=reader, case=case, modality="_m", truth=truth, score=score)
    if isinstance(ai_scores, pd.DataFrame):
        check_columns(ai_scores, [case, score], what="AI scores")
        if ai_scores[case].duplicated().any():
            raise StatsInputError(f"AI scores: duplicate case id(s) in column {case!r}")
        ai_map = pd.Series(ai_scores[score].to_numpy(), index=ai_scores[case].to_numpy())
    elif isinstance(ai_scores, pd.Series):
        ai_map = ai_scores
    else:
        ai_map = pd.Series(dict(ai_scores))
    missing = [c for c in st.cases if c not in ai_map.index]
    if missing:
        raise StatsInputError(f"AI scores: {len(missing)} case(s) of the study have no AI score (e.g. {missing[0]!r})")
    ai = check_scores(ai_map.loc[st.cases].to_numpy(dtype=float), name="AI scores")
    J = len(st.readers)
    if J < 2:
        raise StatsInputError("ai_vs_readers needs at least 2 readers")
    X2 = np.vstack([st.X[0], ai[None, :]])  # readers..., AI
    aucs, cov, _ = _aucs_and_cov(X2, st.y, covariance)
    th = aucs[:J]
    a = float(aucs[J])
    # covariance of the differences D_j = theta_j - theta_AI
    L = np.hstack([np.eye(J), -np.ones((J, 1))])
    cd = L @ cov @ L.T
    D = th - a
    ms_r = float(D.var(ddof=1))
    cov2 = float(cd[~np.eye(J, dtype=bool)].mean())
    den = ms_r + J * max(cov2, 0.0)
    se = float(np.sqrt(den / J))
    dfh = float(den**2 / (ms_r**2 / (J - 1))) if ms_r > 0 else float("inf")
    mean_d = float(D.mean())
    tstat = mean_d / se if se > 0 else float("nan")
    p = float(2 * (_st.t.sf(abs(tstat), dfh) if np.isfinite(dfh) else _st.norm.sf(abs(tstat))))
    q = float(_st.t.ppf(1 - alpha / 2, dfh)) if np.isfinite(dfh) else float(_st.norm.ppf(1 - alpha / 2))
    rows = []
    for j, r in enumerate(st.readers):
        c = delong_test(st.y, st.X[0, j], ai, alpha=alpha)
        rows.append({
            "reader": r, "auc_reader": c.auc_a, "auc_ai": c.auc_b, "difference": c.difference,
            "ci_low": c.ci_low, "ci_high": c.ci_high, "z": c.z, "p_value": c.p_value,
        })
    return AIvsReadersResult(
        ai_auc=a, reader_mean_auc=float(th.mean()), difference=mean_d, se=se, df=dfh, t=float(tstat),
        p_value=p, ci_low=mean_d - q * se, ci_high=mean_d + q * se, per_reader=pd.DataFrame(rows),
        covariance=covariance, alpha=alpha,
    )
