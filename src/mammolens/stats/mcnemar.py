"""McNemar's test on paired binary decisions.

``b`` counts cases where A says positive (or, with ``y_true`` and ``subset="all"``, is
correct) and B does not; ``c`` the reverse. Only discordant pairs carry information.

* ``exact``: two-sided binomial test of ``b`` among ``b + c`` with p = 1/2,
  ``p = min(1, 2 * P(X <= min(b, c)))``; statistic = ``min(b, c)``.
* ``chi2``: ``(|b - c| - 1)^2 / (b + c)`` with Edwards' continuity correction
  (``correction=True``) or ``(b - c)^2 / (b + c)``, chi-square with 1 df.
* ``auto``: exact when ``b + c < 25`` (the usual rule: the chi-square approximation needs
  enough discordant pairs), chi-square otherwise.

Both agree with ``statsmodels.stats.contingency_tables.mcnemar(table, exact=...,
correction=...)``. With ``b + c = 0`` the test is uninformative: statistic 0, p = 1.

References
----------
.. [1] McNemar Q. Note on the sampling error of the difference between correlated
   proportions or percentages. Psychometrika 1947;12:153-157.
.. [2] Edwards AL. Note on the "correction for continuity" in testing the significance of
   the difference between correlated proportions. Psychometrika 1948;13:185-187.
.. [3] Agresti A. Categorical Data Analysis, 3rd ed., Wiley 2013, sec. 11.1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

from mammolens.stats._validate import StatsInputError, check_choice, check_truth

EXACT_BELOW = 25


@dataclass(frozen=True)
class McNemarResult:
    b: int
    c: int
    statistic: float
    p_value: float
    method: str
    n: int = 0
    subset: str = "all"
    correction: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_from_counts(b: int, c: int, *, method: str = "auto", correction: bool = True) -> McNemarResult:
    """McNemar's test from the two discordant counts."""
    check_choice(method, ("auto", "exact", "chi2"), name="method")
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise StatsInputError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if method == "auto":
        method = "exact" if b + c < EXACT_BELOW else "chi2"
    if b + c == 0:
        return McNemarResult(b, c, 0.0, 1.0, method, correction=correction)
    if method == "exact":
        stat = float(min(b, c))
        p = float(min(1.0, 2 * _st.binom.cdf(min(b, c), b + c, 0.5)))
    else:
        d = abs(b - c)
        if correction:
            d = max(d - 1, 0)
        stat = float(d * d / (b + c))
        p = float(_st.chi2.sf(stat, 1))
    return McNemarResult(b, c, stat, p, method, correction=correction)


def mcnemar_test(
    pred_a: Any,
    pred_b: Any,
    *,
    y_true: Any = None,
    subset: str = "all",
    method: str = "auto",
    correction: bool = True,
) -> McNemarResult:
    """McNemar's test comparing two sets of paired binary decisions.

    Parameters
    ----------
    pred_a, pred_b : array-like of 0/1
        Decisions of A and B on the same cases.
    y_true : array-like of 0/1, optional
        Truth. With ``subset="all"`` the test compares correctness (accuracy); with
        ``subset="positives"`` it compares the decisions on diseased cases only
        (a sensitivity comparison); ``"negatives"``: on non-diseased cases
        (specificity comparison). Without ``y_true`` decisions are compared directly.
    method : {"auto", "exact", "chi2"}
        See the module docstring; ``auto`` is exact when ``b + c < 25``.
    correction : bool
        Continuity correction of the chi-square statistic.

    Returns
    -------
    McNemarResult
    """
    check_choice(subset, ("all", "positives", "negatives"), name="subset")
    a = check_truth(pred_a, name="pred_a")
    b = check_truth(pred_b, name="pred_b")
    if a.size != b.size:
        raise StatsInputError(f"pred_a and pred_b differ in length ({a.size} vs {b.size})")
    if y_true is None:
        if subset != "all":
            raise StatsInputError(f"subset={subset!r} needs y_true")
        xa, xb = a, b
    else:
        y = check_truth(y_true)
        if y.size != a.size:
            raise StatsInputError(f"y_true: length {y.size} does not match the predictions ({a.size})")
        if subset == "all":
            xa, xb = (a == y).astype(np.int8), (b == y).astype(np.int8)
        else:
            keep = y == (1 if subset == "positives" else 0)
            if not keep.any():
                raise StatsInputError(f"y_true: no {subset} cases")
            xa, xb = a[keep], b[keep]
            if subset == "negatives":  # count "correct" (negative) calls as the event
                xa, xb = 1 - xa, 1 - xb
    n10 = int(np.sum((xa == 1) & (xb == 0)))
    n01 = int(np.sum((xa == 0) & (xb == 1)))
    r = mcnemar_from_counts(n10, n01, method=method, correction=correction)
    return McNemarResult(r.b, r.c, r.statistic, r.p_value, r.method, int(xa.size), subset, correction)
