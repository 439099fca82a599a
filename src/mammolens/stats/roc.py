"""ROC curves, AUC with confidence intervals, partial AUC and AUC comparisons.

Conventions
-----------
* Higher scores mean "more likely positive" (malignant). A case is called positive when
  ``score >= threshold``. The direction is never guessed from the data (unlike pROC's
  ``direction="auto"``): negate the score if lower means positive.
* The AUC is the empirical (trapezoidal, Mann-Whitney) area; ties between a positive
  and a negative count one half.
* DeLong variances use the fast midrank algorithm of Sun & Xu (2014), O(n log n) in the
  number of cases, identical to DeLong, DeLong & Clarke-Pearson (1988) and to pROC.

References
----------
.. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
   correlated receiver operating characteristic curves: a nonparametric approach.
   Biometrics 1988;44:837-845.
.. [2] Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas
   under correlated receiver operating characteristic curves. IEEE Signal Processing
   Letters 2014;21(11):1389-1393.
.. [3] Obuchowski NA. Nonparametric analysis of clustered ROC curve data. Biometrics
   1997;53:567-578.
.. [4] McClish DK. Analyzing a portion of the ROC curve. Med Decis Making 1989;9:190-195.
.. [5] Robin X et al. pROC: an open-source package for R and S+ to analyze and compare
   ROC curves. BMC Bioinformatics 2011;12:77.
.. [6] Pepe MS. The Statistical Evaluation of Medical Tests for Classification and
   Prediction. Oxford University Press, 2003 (logit-scale CIs, sec. 5.2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

from mammolens.stats._validate import (
    StatsInputError,
    as_1d,
    check_alpha,
    check_both_classes,
    check_choice,
    check_scores,
    check_truth,
)

AUC_CI_METHODS = ("delong", "delong_logit", "bootstrap")


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ROCCurve:
    """Empirical ROC curve: ``fpr[i], tpr[i]`` for calling ``score >= thresholds[i]`` positive.

    ``thresholds`` are the distinct scores in decreasing order, preceded by ``+inf``
    (nothing called positive). Unpacks like scikit-learn: ``fpr, tpr, thr = roc_curve(...)``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.fpr, self.tpr, self.thresholds))

    def to_dict(self) -> dict[str, Any]:
        return {
            "fpr": self.fpr.tolist(),
            "tpr": self.tpr.tolist(),
            "thresholds": [None if not np.isfinite(t) else float(t) for t in self.thresholds],
        }


@dataclass(frozen=True)
class AUCResult:
    """AUC with a two-sided ``1 - alpha`` confidence interval."""

    auc: float
    ci_low: float
    ci_high: float
    se: float
    n_pos: int
    n_neg: int
    method: str
    alpha: float = 0.05
    n_clusters: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AUCComparison:
    """Difference ``auc_a - auc_b`` with its CI, z statistic and two-sided p-value."""

    auc_a: float
    auc_b: float
    difference: float
    ci_low: float
    ci_high: float
    se: float
    z: float
    p_value: float
    method: str = "delong_paired"
    alpha: float = 0.05
    n_pos: int = 0
    n_neg: int = 0
    correlation: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PartialAUCResult:
    """Partial AUC over a high-specificity (or high-sensitivity) region."""

    pauc: float
    focus: str
    bounds: tuple[float, float]
    standardized: float | None
    n_pos: int
    n_neg: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bounds"] = list(self.bounds)
        return d


# --------------------------------------------------------------------------- helpers
def _prepare(y_true: Any, y_score: Any, *, positive: Any = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    y = check_truth(y_true, positive=positive)
    s = check_scores(y_score, n=y.size)
    n_pos, n_neg = check_both_classes(y)
    return y, s, n_pos, n_neg


def roc_curve(y_true: Any, y_score: Any, *, positive: Any = None) -> ROCCurve:
    """Empirical ROC curve.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Binary truth (0/1 or booleans; any two values with ``positive``).
    y_score : array-like of shape (n,)
        Finite scores, higher = more likely positive.
    positive : optional
        The value of ``y_true`` that means positive.

    Returns
    -------
    ROCCurve
        ``fpr``, ``tpr`` and ``thresholds`` (decreasing; first ``+inf``). A case is
        positive at threshold ``t`` when ``score >= t``.
    """
    y, s, n_pos, n_neg = _prepare(y_true, y_score, positive=positive)
    tp, fp, thr = roc_counts(y, s)
    return ROCCurve(fpr=fp / n_neg, tpr=tp / n_pos, thresholds=thr)


def roc_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve's core: true and false positives at every cut of the ranked scores.

    Cut ``k`` calls positive the cases with the ``k`` highest distinct scores (cut 0:
    none). The one implementation behind :func:`roc_curve` and the operating points of
    :mod:`mammolens.stats.operating`; inputs are already validated (0/1 ``y``, finite ``s``).

    Returns
    -------
    tp, fp : numpy.ndarray of shape (G + 1,)
        Counts at cuts ``0..G`` (G distinct scores), non-decreasing.
    thresholds : numpy.ndarray of shape (G + 1,)
        ``+inf``, then the distinct scores in decreasing order: cut ``k`` is ``score >= thresholds[k]``.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tp = np.r_[0, np.cumsum(y_sorted)[last]]
    fp = np.r_[0, np.cumsum(1 - y_sorted)[last]]
    return tp, fp, np.r_[np.inf, s_sorted[last]]


def _midranks(x: np.ndarray) -> np.ndarray:
    """Midranks (average ranks, 1-based) along the last axis."""
    return _st.rankdata(x, method="average", axis=-1)


def _midranks_sorted(v: np.ndarray) -> np.ndarray:
    """Midranks (1-based) of an already sorted 1-D array: linear time."""
    n = v.size
    if n == 0:
        return np.empty(0)
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(v[1:], v[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    ends = np.r_[starts[1:], n]
    mid = (starts + ends + 1) / 2.0
    return np.repeat(mid, ends - starts)


def _delong_placements(
    y: np.ndarray, scores: np.ndarray, *, keep_order: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong structural components for ``k`` score vectors on the same cases.

    ``scores`` has shape (k, n). Returns ``aucs`` (k,), ``v10`` (k, m) for positives
    (fraction of negatives below, ties 1/2; in the order of the positives in ``y``) and
    ``v01`` (k, n_neg) for negatives (fraction of positives above). Sun & Xu (2014),
    Algorithm 2, with one sort per score vector: the midranks of the positives and of
    the negatives among themselves are read off the same sorted order. With
    ``keep_order=False`` (one vector, only its variance needed) the components are
    returned in sorted order, which saves two scatters.
    """
    ypos = y == 1
    k, N = scores.shape
    m = int(ypos.sum())
    n = N - m
    if keep_order:
        where = np.cumsum(ypos) - 1  # index among positives
        where_neg = np.cumsum(~ypos) - 1  # index among negatives
    aucs = np.empty(k)
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    for r in range(k):
        order = np.argsort(scores[r], kind="quicksort")
        ss = scores[r][order]
        tz = _midranks_sorted(ss)
        p = ypos[order]
        tx = _midranks_sorted(ss[p])
        ty = _midranks_sorted(ss[~p])
        vp = (tz[p] - tx) / n
        vn = 1.0 - (tz[~p] - ty) / m
        if keep_order:
            v10[r, where[order[p]]] = vp
            v01[r, where_neg[order[~p]]] = vn
        else:
            v10[r] = vp
            v01[r] = vn
        aucs[r] = vp.mean()
    return aucs, v10, v01


def _delong_cov(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    m = v10.shape[1]
    n = v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((v10.shape[0], v10.shape[0]))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((v01.shape[0], v01.shape[0]))
    return s10 / m + s01 / n


def _clustered_var(y: np.ndarray, v10: np.ndarray, v01: np.ndarray, auc: float, clusters: np.ndarray) -> tuple[float, int]:
    """Obuchowski (1997) variance of the AUC with correlated units within clusters."""
    codes, _ = _factorize(clusters)
    n_cl = int(codes.max()) + 1
    pos_codes = codes[y == 1]
    neg_codes = codes[y == 0]
    M = pos_codes.size
    N = neg_codes.size
    V10 = np.bincount(pos_codes, weights=v10, minlength=n_cl)
    V01 = np.bincount(neg_codes, weights=v01, minlength=n_cl)
    m_i = np.bincount(pos_codes, minlength=n_cl)
    n_i = np.bincount(neg_codes, minlength=n_cl)
    i10 = int((m_i > 0).sum())
    i01 = int((n_i > 0).sum())
    d10 = V10 - m_i * auc
    d01 = V01 - n_i * auc
    s10 = i10 / max(i10 - 1, 1) * np.sum(d10**2) / M**2
    s01 = i01 / max(i01 - 1, 1) * np.sum(d01**2) / N**2
    s11 = n_cl / max(n_cl - 1, 1) * np.sum(d10 * d01) / (M * N)
    return float(s10 + s01 + 2 * s11), n_cl


def _factorize(x: Any) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(as_1d(x, name="clusters")), use_na_sentinel=True)
    if (codes < 0).any():
        raise StatsInputError(f"clusters: {int((codes < 0).sum())} missing cluster id(s)")
    return codes.astype(np.int64), np.asarray(uniques)


def auc_score(y_true: Any, y_score: Any, *, positive: Any = None) -> float:
    """Empirical AUC (Mann-Whitney statistic / (n_pos n_neg)); ties count one half."""
    y, s, n_pos, n_neg = _prepare(y_true, y_score, positive=positive)
    r = _midranks(s)
    return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_ci(
    y_true: Any,
    y_score: Any,
    *,
    method: str = "delong",
    alpha: float = 0.05,
    clusters: Any = None,
    n_boot: int = 2000,
    seed: int | None = None,
    positive: Any = None,
) -> AUCResult:
    """AUC with a confidence interval.

    Parameters
    ----------
    y_true, y_score : array-like of shape (n,)
        Binary truth and finite scores (higher = more likely positive).
    method : {"delong", "delong_logit", "bootstrap"}
        ``delong``: AUC +- z * SE with the DeLong (1988) variance (pROC's default CI);
        with ``clusters`` the Obuchowski (1997) clustered variance is used instead.
        ``delong_logit``: the same variance, interval built on the logit scale
        (``logit(AUC) +- z * SE / (AUC (1 - AUC))``, back-transformed; stays inside
        [0, 1]; degenerate [AUC, AUC] when AUC is 0 or 1).
        ``bootstrap``: percentile interval of ``n_boot`` stratified bootstrap resamples
        (positives and negatives resampled separately, as pROC's ``boot.stratified``); with
        ``clusters`` whole clusters (e.g. patients) are resampled, stratified by whether
        the cluster holds only negatives, only positives or both. ``se`` is the bootstrap standard deviation.
    alpha : float
        1 - confidence level.
    clusters : array-like of shape (n,), optional
        Cluster id per case (e.g. ``patient_id``) when cases are not independent.
    n_boot : int
        Number of bootstrap resamples.
    seed : int, optional
        Seed of the bootstrap random generator.
    positive : optional
        Value of ``y_true`` meaning positive when it is not 0/1.

    Returns
    -------
    AUCResult

    References
    ----------
    DeLong et al. 1988; Sun & Xu 2014; Obuchowski 1997; Carpenter & Bithell, Bootstrap
    confidence intervals, Stat Med 2000;19:1141-1164.
    """
    check_choice(method, AUC_CI_METHODS, name="method")
    alpha = check_alpha(alpha)
    y, s, n_pos, n_neg = _prepare(y_true, y_score, positive=positive)
    if clusters is not None:
        clusters = as_1d(clusters, name="clusters")
        if clusters.size != y.size:
            raise StatsInputError(f"clusters: length {clusters.size} does not match y_true ({y.size})")
    z = _st.norm.ppf(1 - alpha / 2)
    if method == "bootstrap":
        if int(n_boot) < 10:
            raise StatsInputError(f"n_boot must be >= 10, got {n_boot}")
        auc = float(_delong_placements(y, s[None, :], keep_order=False)[0][0])
        boots = bootstrap_auc(y, s, n_boot=int(n_boot), seed=seed, clusters=clusters)
        lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
        n_cl = None if clusters is None else int(len(np.unique(_factorize(clusters)[0])))
        return AUCResult(auc, float(lo), float(hi), float(np.std(boots, ddof=1)), n_pos, n_neg, method, alpha, n_cl)
    aucs, v10, v01 = _delong_placements(y, s[None, :], keep_order=clusters is not None)
    auc = float(aucs[0])
    n_cl = None
    if clusters is None:
        var = float(_delong_cov(v10, v01)[0, 0])
    else:
        var, n_cl = _clustered_var(y, v10[0], v01[0], auc, clusters)
    se = float(np.sqrt(max(var, 0.0)))
    if method == "delong":
        lo, hi = auc - z * se, auc + z * se
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    else:
        if auc <= 0.0 or auc >= 1.0:
            lo = hi = auc
        else:
            lg = np.log(auc / (1 - auc))
            half = z * se / (auc * (1 - auc))
            lo, hi = 1 / (1 + np.exp(-(lg - half))), 1 / (1 + np.exp(-(lg + half)))
    return AUCResult(auc, float(lo), float(hi), se, n_pos, n_neg, method, alpha, n_cl)


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC by the Hanley & McNeil (1982) formula.

    ``Var = [A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)] / (n1 n0)`` with
    ``Q1 = A/(2-A)`` and ``Q2 = 2A^2/(1+A)`` (exponential-score approximation). Unlike
    the DeLong variance it depends only on the AUC and the class sizes, so it stays
    positive for an AUC strictly inside (0, 1) even when the sample's placement values
    have no spread (all scores tied, or perfect separation after a continuity
    correction: see :func:`mammolens.stats.subgroups.subgroup_analysis`).

    References
    ----------
    Hanley JA, McNeil BJ. The meaning and use of the area under a receiver operating
    characteristic (ROC) curve. Radiology 1982;143:29-36.
    """
    a = float(auc)
    n1, n0 = int(n_pos), int(n_neg)
    if not (0.0 <= a <= 1.0) or n1 < 1 or n0 < 1:
        raise StatsInputError(f"hanley_mcneil_se needs 0 <= auc <= 1 and both classes, got auc={auc}, n_pos={n_pos}, n_neg={n_neg}")
    q1 = a / (2.0 - a)
    q2 = 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return float(np.sqrt(max(var, 0.0)))


def bootstrap_auc(
    y: Any,
    s: Any,
    *,
    n_boot: int = 2000,
    seed: int | None = None,
    clusters: Any = None,
    chunk: int = 64,
) -> np.ndarray:
    """Bootstrap distribution of the AUC (vectorised; weights instead of copies).

    Each resample is represented by case weights (how many times each case is drawn);
    the weighted Mann-Whitney AUC of all resamples in a chunk is computed at once from
    one sort of the scores. Stratified: positives and negatives (or, with ``clusters``,
    clusters holding only negatives, only positives, or both) are resampled separately
    so every resample has both classes.

    Returns
    -------
    numpy.ndarray of shape (n_boot,)
    """
    y = check_truth(y)
    s = check_scores(s, n=y.size)
    check_both_classes(y)
    rng = np.random.default_rng(seed)
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order].astype(bool)
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted) != 0) + 1]  # tie groups
    if clusters is None:
        unit = np.arange(y.size)[order]  # each case is its own unit
        unit_pos = y.astype(bool)
        n_units = y.size
    else:
        codes, _ = _factorize(clusters)
        n_units = int(codes.max()) + 1
        unit = codes[order]
        n_pos_u = np.bincount(codes, weights=y, minlength=n_units)
        n_all_u = np.bincount(codes, minlength=n_units)
        # three strata (only positives / only negatives / both) so that every resample
        # holds both classes
        kind = np.where(n_pos_u == 0, 0, np.where(n_pos_u == n_all_u, 1, 2))
        unit_pos = None
    if unit_pos is not None:
        strata = [np.flatnonzero(unit_pos), np.flatnonzero(~unit_pos)]
    else:
        strata = [np.flatnonzero(kind == k) for k in range(3)]
    strata = [s_ for s_ in strata if s_.size]
    out = np.empty(n_boot, dtype=np.float64)
    for b0 in range(0, n_boot, chunk):
        nb = min(chunk, n_boot - b0)
        w_unit = np.zeros((nb, n_units), dtype=np.float64)
        for members in strata:
            draws = rng.integers(0, members.size, size=(nb, members.size))
            picked = members[draws]
            # counts per unit: offset rows so one bincount does the whole chunk
            flat = (picked + (np.arange(nb) * n_units)[:, None]).ravel()
            w_unit += np.bincount(flat, minlength=nb * n_units).reshape(nb, n_units)
        w = w_unit[:, unit]  # (nb, n) weights in sorted order
        wp = np.where(y_sorted, w, 0.0)
        wn = w - wp
        gp = np.add.reduceat(wp, starts, axis=1)
        gn = np.add.reduceat(wn, starts, axis=1)
        below = np.cumsum(gn, axis=1) - gn  # negatives strictly below each tie group
        num = np.sum(gp * (below + 0.5 * gn), axis=1)
        out[b0 : b0 + nb] = num / (gp.sum(axis=1) * gn.sum(axis=1))
    return out


# --------------------------------------------------------------------------- partial AUC
def _area_to(x: np.ndarray, y: np.ndarray, e: float) -> float:
    """Area under the piecewise-linear curve (x ascending) from x=0 to x=e."""
    x0, x1 = x[:-1], x[1:]
    y0, y1 = y[:-1], y[1:]
    dx = x1 - x0
    xe = np.clip(x1, None, e)
    take = (x0 < e) & (dx > 0)
    ye = np.where(take, y0 + (y1 - y0) * (xe - x0) / np.where(dx > 0, dx, 1.0), 0.0)
    return float(np.sum(np.where(take, (xe - x0) * (y0 + ye) / 2.0, 0.0)))


def partial_auc(
    y_true: Any,
    y_score: Any,
    *,
    min_specificity: float | None = None,
    min_sensitivity: float | None = None,
    mcclish: bool = False,
    positive: Any = None,
) -> PartialAUCResult:
    """Partial AUC over a high-specificity (default) or high-sensitivity region.

    Parameters
    ----------
    min_specificity : float, optional
        Area over specificities in ``[min_specificity, 1]`` (pROC:
        ``partial.auc = c(1, min_specificity), partial.auc.focus = "sp"``); 0.8 when
        neither bound is given.
    min_sensitivity : float, optional
        Instead, area over sensitivities in ``[min_sensitivity, 1]`` (pROC focus "se").
        Give exactly one of the two.
    mcclish : bool
        Also return McClish's (1989) standardised pAUC, ``(1 + (pAUC - min) / (max - min)) / 2``
        with ``min`` the area under the chance diagonal and ``max`` that of a perfect test
        over the region (pROC's ``partial.auc.correct = TRUE``): 0.5 = chance, 1 = perfect.

    Returns
    -------
    PartialAUCResult
    """
    if min_specificity is not None and min_sensitivity is not None:
        raise StatsInputError("give only one of min_specificity or min_sensitivity")
    if min_specificity is None and min_sensitivity is None:
        min_specificity = 0.8
    bound = float(min_specificity if min_specificity is not None else min_sensitivity)  # type: ignore[arg-type]
    if not (0.0 <= bound < 1.0):
        raise StatsInputError(f"the region's lower bound must be in [0, 1), got {bound}")
    y, s, n_pos, n_neg = _prepare(y_true, y_score, positive=positive)
    curve = roc_curve(y, s)
    e = 1.0 - bound
    if min_specificity is not None:
        focus = "specificity"
        x, yy = curve.fpr, curve.tpr  # ascending in fpr
    else:
        focus = "sensitivity"
        # area over FNR in [0, e] of specificity: walk the curve from the top right
        x, yy = (1.0 - curve.tpr)[::-1], (1.0 - curve.fpr)[::-1]
    pauc = _area_to(x, yy, e)
    std = None
    if mcclish:
        lo = e * e / 2.0
        hi = e
        std = float((1 + (pauc - lo) / (hi - lo)) / 2)
    return PartialAUCResult(pauc, focus, (bound, 1.0), std, n_pos, n_neg)


# --------------------------------------------------------------------------- comparisons
def delong_test(
    y_true: Any,
    score_a: Any,
    score_b: Any,
    *,
    alpha: float = 0.05,
    positive: Any = None,
) -> AUCComparison:
    """Paired DeLong test of two AUCs measured on the same cases.

    ``z = (AUC_a - AUC_b) / sqrt(V_a + V_b - 2 C_ab)`` with the DeLong covariance
    matrix; two-sided p-value from the normal distribution; CI of the difference
    ``diff +- z_{1-alpha/2} SE`` (pROC ``roc.test(..., method = "delong", paired = TRUE)``).

    References
    ----------
    DeLong, DeLong & Clarke-Pearson 1988; Sun & Xu 2014.
    """
    alpha = check_alpha(alpha)
    y = check_truth(y_true, positive=positive)
    a = check_scores(score_a, name="score_a", n=y.size)
    b = check_scores(score_b, name="score_b", n=y.size)
    n_pos, n_neg = check_both_classes(y)
    aucs, v10, v01 = _delong_placements(y, np.vstack([a, b]))
    cov = _delong_cov(v10, v01)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    zc = _st.norm.ppf(1 - alpha / 2)
    if se > 0:
        zstat = diff / se
        p = float(2 * _st.norm.sf(abs(zstat)))
    else:  # identical rankings: no evidence of a difference
        zstat = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
        p = 1.0 if diff == 0 else 0.0
    denom = np.sqrt(cov[0, 0] * cov[1, 1])
    corr = float(cov[0, 1] / denom) if denom > 0 else None
    return AUCComparison(
        float(aucs[0]), float(aucs[1]), diff, float(diff - zc * se), float(diff + zc * se), se, float(zstat), p,
        "delong_paired", alpha, n_pos, n_neg, corr,
    )


def unpaired_auc_test(
    y_true_a: Any,
    score_a: Any,
    y_true_b: Any,
    score_b: Any,
    *,
    alpha: float = 0.05,
) -> AUCComparison:
    """Compare two AUCs measured on different (independent) case sets.

    ``z = (AUC_a - AUC_b) / sqrt(V_a + V_b)`` with DeLong variances (pROC ``roc.test(...,
    paired = FALSE, method = "delong")``, which there is a Welch-type t test with the same
    statistic; here the normal reference is used).
    """
    alpha = check_alpha(alpha)
    ra = auc_ci(y_true_a, score_a, alpha=alpha)
    rb = auc_ci(y_true_b, score_b, alpha=alpha)
    diff = ra.auc - rb.auc
    se = float(np.hypot(ra.se, rb.se))
    zc = _st.norm.ppf(1 - alpha / 2)
    zstat = diff / se if se > 0 else (0.0 if diff == 0 else float(np.sign(diff) * np.inf))
    p = float(2 * _st.norm.sf(abs(zstat))) if se > 0 else (1.0 if diff == 0 else 0.0)
    return AUCComparison(
        ra.auc, rb.auc, diff, float(diff - zc * se), float(diff + zc * se), se, float(zstat), p,
        "delong_unpaired", alpha, ra.n_pos + rb.n_pos, ra.n_neg + rb.n_neg, None,
    )


def roc_band(
    y_true: Any,
    y_score: Any,
    *,
    clusters: Any = None,
    n_boot: int = 200,
    seed: int = 0,
    n_grid: int = 101,
    alpha: float = 0.05,
    min_valid: int = 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise ``1 - alpha`` band of sensitivity at fixed false-positive rates (a visual aid).

    The vertical-averaging bootstrap of Macskassy & Provost (2004): resample clusters
    (patients; cases when ``clusters`` is None) with replacement, take each replicate's
    sensitivity at every FPR of a regular grid (right-continuous step: the highest TPR with
    FPR <= f), and the pointwise quantiles. Replicates holding one class only are dropped.

    Returns
    -------
    grid, low, high : numpy.ndarray of shape (n_grid,)
        All-NaN bands when fewer than ``min_valid`` replicates had both classes.
    """
    y, s, _, _ = _prepare(y_true, y_score)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, n_grid)
    groups = np.asarray(clusters) if clusters is not None else np.arange(len(y))
    if groups.shape != y.shape:
        raise StatsInputError(f"clusters has {groups.size} values for {y.size} cases")
    uniq, inv = np.unique(groups, return_inverse=True)
    idx_by = [np.flatnonzero(inv == k) for k in range(len(uniq))]
    curves = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([idx_by[k] for k in pick])
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        tp, fp, _ = roc_counts(yy, s[idx])
        fpr, tpr = fp / (yy.size - yy.sum()), tp / yy.sum()
        pos = np.searchsorted(fpr, grid, side="right") - 1
        curves.append(tpr[pos])
    if len(curves) < min_valid:
        return grid, np.full_like(grid, np.nan), np.full_like(grid, np.nan)
    arr = np.vstack(curves)
    return grid, np.quantile(arr, alpha / 2, axis=0), np.quantile(arr, 1 - alpha / 2, axis=0)
