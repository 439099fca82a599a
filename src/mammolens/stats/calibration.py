"""Calibration of predicted probabilities: reliability bins, Brier score, ECE, intercept/slope.

* Reliability diagram: ``n_bins`` equal-width bins of the score over [0, 1]; per bin the
  number of cases, of positives, the mean score and the observed fraction with a Wilson CI.
* Brier score: mean squared difference between score and truth.
* Expected calibration error (ECE): the case-weighted mean of ``|observed - mean score|``
  over the non-empty bins (Naeini et al. 2015).
* Calibration intercept and slope: logistic recalibration ``logit P(y=1) = a + b logit(s)``
  (Cox 1958); ``None`` when not estimable (perfect separation, a singular fit).

References
----------
.. [1] Cox DR. Two further applications of a model for binary regression. Biometrika
   1958;45:562-565.
.. [2] Naeini MP, Cooper G, Hauskrecht M. Obtaining well calibrated probabilities using
   Bayesian binning. AAAI 2015.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mammolens.stats._validate import StatsInputError, check_scores, check_truth
from mammolens.stats.operating import proportion_ci


@dataclass(frozen=True)
class CalibrationResult:
    """Reliability bins and summary calibration measures (:func:`calibration`)."""

    n: int
    brier: float
    ece: float
    calibration_intercept: float | None
    calibration_slope: float | None
    bins: list[dict[str, Any]]  # bin_low, bin_high, n, n_pos, mean_score, observed, ci_low, ci_high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration(y_true: Any, y_score: Any, *, n_bins: int = 10, alpha: float = 0.05) -> CalibrationResult:
    """Calibration of probabilities ``y_score`` in [0, 1] against binary ``y_true``.

    Scores outside [0, 1] fall in the first / last bin (they are not probabilities: the
    measures then say how far off they are).

    Examples
    --------
    >>> r = calibration([0, 0, 1, 1], [0.05, 0.15, 0.85, 0.95], n_bins=5)
    >>> round(r.brier, 4), r.bins[0]["n"], round(r.ece, 3)
    (0.0125, 2, 0.1)
    """
    y = check_truth(y_true)
    s = check_scores(y_score, n=y.size)
    if y.size == 0:
        raise StatsInputError("calibration: no cases")
    if n_bins < 1:
        raise StatsInputError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1]), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        m = which == b
        k, n = int(y[m].sum()), int(m.sum())
        lo = hi = None
        if n:
            p = proportion_ci(k, n, method="wilson", alpha=alpha)
            lo, hi = _finite(p.ci_low), _finite(p.ci_high)
        bins.append({"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]), "n": n, "n_pos": k,
                     "mean_score": float(s[m].mean()) if n else None, "observed": k / n if n else None,
                     "ci_low": lo, "ci_high": hi})
    brier = float(np.mean((s - y) ** 2))
    ece = float(sum(b["n"] * abs(b["observed"] - b["mean_score"]) for b in bins if b["n"]) / len(y))
    intercept, slope = _logistic_recalibration(y, s)
    return CalibrationResult(n=int(y.size), brier=brier, ece=ece, calibration_intercept=intercept,
                             calibration_slope=slope, bins=bins)


def _finite(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _logistic_recalibration(y: np.ndarray, s: np.ndarray) -> tuple[float | None, float | None]:
    import warnings

    try:
        import statsmodels.api as sm

        c = np.clip(s, 1e-6, 1 - 1e-6)
        with warnings.catch_warnings():  # separation / convergence: reported as not estimable or kept
            warnings.simplefilter("ignore")
            fit = sm.Logit(y, sm.add_constant(np.log(c / (1 - c)))).fit(disp=0)
        intercept, slope = (float(v) for v in fit.params)
    except Exception:  # noqa: BLE001 - perfect separation or singular fit: not estimable
        return None, None
    return _finite(intercept), _finite(slope)


__all__ = ["CalibrationResult", "calibration"]
