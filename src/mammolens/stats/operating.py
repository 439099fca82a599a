"""Operating points, proportions with confidence intervals and threshold tables.

Threshold convention
--------------------
A case is called positive when ``score >= threshold``. Thresholds chosen from the data
are reported as pROC reports them: the **midpoint** between the lowest score called
positive and the highest score below it (``-inf``/``+inf`` at the ends). Since no score
lies strictly between those two, ``score >= midpoint`` and ``score >= lowest positive
score`` classify every case of the data identically; the midpoint is the safer value to
apply to new cases. ``OperatingPoint.min_positive_score`` gives the other convention.

References
----------
.. [1] Youden WJ. Index for rating diagnostic tests. Cancer 1950;3:32-35.
.. [2] Wilson EB. Probable inference, the law of succession, and statistical inference.
   J Am Stat Assoc 1927;22:209-212.
.. [3] Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in
   the case of the binomial. Biometrika 1934;26:404-413.
.. [4] Robin X et al. pROC. BMC Bioinformatics 2011;12:77 (``coords(..., "best")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
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
from mammolens.stats.roc import roc_counts


@dataclass(frozen=True)
class Proportion:
    """A proportion ``k / n`` with a two-sided confidence interval."""

    value: float
    ci_low: float
    ci_high: float
    k: int
    n: int
    method: str = "wilson"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold and the sensitivity/specificity it gives (``score >= threshold``)."""

    threshold: float
    sensitivity: float
    specificity: float
    youden: float
    tp: int
    fp: int
    tn: int
    fn: int
    method: str
    target: float | None = None
    min_positive_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proportion_ci(k: int, n: int, *, method: str = "wilson", alpha: float = 0.05) -> Proportion:
    """Confidence interval for a binomial proportion.

    Parameters
    ----------
    k, n : int
        Successes and trials (``n = 0`` gives NaN value and the interval [0, 1]).
    method : {"wilson", "exact"}
        Wilson score interval (no continuity correction), or the Clopper-Pearson
        "exact" interval from beta quantiles. Both equal statsmodels'
        ``proportion_confint(method="wilson" / "beta")``.
    """
    check_choice(method, ("wilson", "exact"), name="ci")
    alpha = check_alpha(alpha)
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise StatsInputError(f"proportion needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Proportion(float("nan"), 0.0, 1.0, 0, 0, method)
    p = k / n
    if method == "exact":
        lo = 0.0 if k == 0 else float(_st.beta.ppf(alpha / 2, k, n - k + 1))
        hi = 1.0 if k == n else float(_st.beta.ppf(1 - alpha / 2, k + 1, n - k))
    else:
        z = _st.norm.ppf(1 - alpha / 2)
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return Proportion(float(p), float(lo), float(hi), k, n, method)


def _binary(x: Any, *, name: str, n: int | None = None) -> np.ndarray:
    arr = check_truth(x, name=name)
    if n is not None and arr.size != n:
        raise StatsInputError(f"{name}: length {arr.size} does not match y_true ({n})")
    return arr


def binary_metrics(
    y_true: Any,
    y_pred: Any,
    *,
    ci: str = "wilson",
    alpha: float = 0.05,
) -> dict[str, Proportion]:
    """Sensitivity, specificity, accuracy, PPV and NPV of binary decisions, with CIs.

    Parameters
    ----------
    y_true, y_pred : array-like of 0/1 (or booleans)
    ci : {"wilson", "exact"}
        Wilson score or Clopper-Pearson interval (see :func:`proportion_ci`).

    Returns
    -------
    dict
        ``sensitivity, specificity, accuracy, ppv, npv`` -> :class:`Proportion`
        (a proportion whose denominator is 0, e.g. PPV with no positive calls, is NaN).
    """
    y = check_truth(y_true)
    p = _binary(y_pred, name="y_pred", n=y.size)
    tp = int(np.sum((y == 1) & (p == 1)))
    fn = int(np.sum((y == 1) & (p == 0)))
    tn = int(np.sum((y == 0) & (p == 0)))
    fp = int(np.sum((y == 0) & (p == 1)))
    return {
        "sensitivity": proportion_ci(tp, tp + fn, method=ci, alpha=alpha),
        "specificity": proportion_ci(tn, tn + fp, method=ci, alpha=alpha),
        "accuracy": proportion_ci(tp + tn, y.size, method=ci, alpha=alpha),
        "ppv": proportion_ci(tp, tp + fp, method=ci, alpha=alpha),
        "npv": proportion_ci(tn, tn + fn, method=ci, alpha=alpha),
    }


def _curve_counts(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """Counts at every candidate cut: call positive the top-k distinct scores.

    Returns arrays over cuts ``0..G`` (G distinct scores): ``tp, fp`` and the pROC-style
    midpoint threshold and lowest positive score of each cut.
    """
    tp, fp, thr = roc_counts(y, s)
    distinct = thr[1:]  # decreasing
    lowest_pos = np.r_[np.inf, distinct]
    below = np.r_[distinct, -np.inf]  # highest score still negative at each cut
    with np.errstate(invalid="ignore"):
        mid = np.where(np.isinf(lowest_pos), np.inf, np.where(np.isinf(below), -np.inf, (lowest_pos + below) / 2))
    return {"tp": tp, "fp": fp, "mid": mid, "lowest": lowest_pos}


def operating_point(
    y_true: Any,
    y_score: Any,
    *,
    method: str = "youden",
    target: float | None = None,
    positive: Any = None,
) -> OperatingPoint:
    """Choose an operating point on the empirical ROC curve.

    Parameters
    ----------
    method : {"youden", "sensitivity", "specificity"}
        ``youden``: maximise sensitivity + specificity - 1 (ties: the highest threshold,
        i.e. the best specificity among the tied points); ``sensitivity``: the highest
        threshold whose sensitivity is >= ``target`` (best specificity at that
        sensitivity); ``specificity``: the lowest threshold whose specificity is >=
        ``target`` (best sensitivity at that specificity).
    target : float
        Required for ``sensitivity``/``specificity``, in [0, 1].

    Returns
    -------
    OperatingPoint
        ``threshold`` is pROC's midpoint convention (see module docstring); apply it as
        ``score >= threshold``. pROC: ``coords(roc, "best", best.method = "youden")``.
    """
    check_choice(method, ("youden", "sensitivity", "specificity"), name="method")
    y = check_truth(y_true, positive=positive)
    s = check_scores(y_score, n=y.size)
    n_pos, n_neg = check_both_classes(y)
    c = _curve_counts(y, s)
    sens = c["tp"] / n_pos
    spec = 1 - c["fp"] / n_neg
    if method == "youden":
        if target is not None:
            raise StatsInputError("target is only used with method='sensitivity' or 'specificity'")
        j = sens + spec - 1
        i = int(np.flatnonzero(np.isclose(j, j.max(), rtol=0, atol=1e-12))[0])
    else:
        if target is None or not (0.0 <= float(target) <= 1.0):
            raise StatsInputError(f"method={method!r} needs target in [0, 1], got {target!r}")
        if method == "sensitivity":
            ok = np.flatnonzero(sens >= float(target) - 1e-12)
            i = int(ok[0])  # cuts go from high to low threshold
        else:
            ok = np.flatnonzero(spec >= float(target) - 1e-12)
            i = int(ok[-1])
    tp, fp = int(c["tp"][i]), int(c["fp"][i])
    return OperatingPoint(
        threshold=float(c["mid"][i]), sensitivity=float(sens[i]), specificity=float(spec[i]),
        youden=float(sens[i] + spec[i] - 1), tp=tp, fp=fp, tn=n_neg - fp, fn=n_pos - tp,
        method=method, target=None if target is None else float(target),
        min_positive_score=float(c["lowest"][i]),
    )


def threshold_table(
    y_true: Any,
    y_score: Any,
    *,
    thresholds: Sequence[float] | None = None,
    target_sensitivities: Sequence[float] = (0.80, 0.85, 0.90, 0.95),
    target_specificities: Sequence[float] = (0.80, 0.85, 0.90, 0.95),
    include_youden: bool = True,
    ci: str = "wilson",
    alpha: float = 0.05,
    positive: Any = None,
) -> pd.DataFrame:
    """A paper's "Table 1": sensitivity, specificity, accuracy, PPV, NPV at chosen thresholds.

    Rows: the Youden point, the points reaching each target sensitivity and each target
    specificity (see :func:`operating_point`), and any fixed ``thresholds``. Each metric
    has its value and ``ci_low``/``ci_high`` (Wilson or Clopper-Pearson).

    Returns
    -------
    pandas.DataFrame
        Columns ``criterion, threshold, tp, fp, tn, fn`` and for each of ``sensitivity,
        specificity, accuracy, ppv, npv``: ``<metric>, <metric>_ci_low, <metric>_ci_high``.
    """
    y = check_truth(y_true, positive=positive)
    s = check_scores(y_score, n=y.size)
    check_both_classes(y)
    rows: list[tuple[str, float]] = []
    if include_youden:
        rows.append(("youden", operating_point(y, s).threshold))
    for t in target_sensitivities:
        rows.append((f"sensitivity>={t:g}", operating_point(y, s, method="sensitivity", target=t).threshold))
    for t in target_specificities:
        rows.append((f"specificity>={t:g}", operating_point(y, s, method="specificity", target=t).threshold))
    for t in thresholds or ():
        t = float(t)
        if np.isnan(t):
            raise StatsInputError("thresholds: NaN threshold")
        rows.append((f"threshold={t:g}", t))
    out = []
    for crit, thr in rows:
        pred = (s >= thr).astype(np.int8)
        m = binary_metrics(y, pred, ci=ci, alpha=alpha)
        tp = int(np.sum((y == 1) & (pred == 1)))
        fp = int(np.sum((y == 0) & (pred == 1)))
        rec: dict[str, Any] = {
            "criterion": crit, "threshold": thr, "tp": tp, "fp": fp,
            "tn": int(np.sum(y == 0)) - fp, "fn": int(np.sum(y == 1)) - tp,
        }
        for name, p in m.items():
            rec[name] = p.value
            rec[f"{name}_ci_low"] = p.ci_low
            rec[f"{name}_ci_high"] = p.ci_high
        out.append(rec)
    return pd.DataFrame(out)


def apply_threshold(y_score: Any, threshold: float) -> np.ndarray:
    """Binary decisions ``score >= threshold`` (0/1)."""
    s = check_scores(as_1d(y_score, name="y_score"))
    return (s >= float(threshold)).astype(np.int8)
