"""Subgroup analysis: AUC per group (manufacturer, density, age band, ...) and heterogeneity.

Each group gets its AUC with a DeLong CI. Groups that are too small (fewer than
``min_n`` cases, or fewer than ``min_class`` positives or negatives) or single-class get a
row with a ``note`` and a warning, never an exception. Heterogeneity: Cochran's Q test of
equal AUCs across the (independent) evaluable groups,
``Q = sum_g w_g (AUC_g - AUC_w)^2`` with ``w_g = 1 / Var_g`` (DeLong), chi-square on
``G - 1`` df.

References
----------
.. [1] Cochran WG. The combination of estimates from different experiments. Biometrics
   1954;10:101-129.
.. [2] DeLong ER, DeLong DM, Clarke-Pearson DL. Biometrics 1988;44:837-845.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from mammolens.stats._validate import (
    StatsInputError,
    check_alpha,
    check_columns,
    check_scores,
    check_truth,
)
from mammolens.stats.roc import auc_ci


@dataclass(frozen=True)
class SubgroupResult:
    """Per-group AUCs and Cochran's Q test of their equality."""

    table: pd.DataFrame  # group, n, n_pos, n_neg, prevalence, auc, ci_low, ci_high, se, note
    q: float
    df: int
    p: float
    warnings: list[str] = field(default_factory=list)
    by: str = ""

    def to_dict(self) -> dict[str, Any]:
        recs = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in self.table.to_dict("records")]
        return {
            "by": self.by,
            "groups": recs,
            "heterogeneity": {"q": self.q, "df": self.df, "p": self.p, "test": "cochran_q"},
            "warnings": list(self.warnings),
        }


def age_bands(ages: Any, bins: Sequence[float] = (40, 50, 60, 70)) -> pd.Series:
    """Label ages by band: with bins (40, 50, 60, 70): ``<40, 40-49, 50-59, 60-69, >=70``.

    Missing ages give ``"unknown"``. Bins must be strictly increasing.
    """
    a = pd.to_numeric(pd.Series(ages), errors="coerce")
    b = [float(x) for x in bins]
    if not b or any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
        raise StatsInputError(f"age bins must be strictly increasing, got {list(bins)}")
    labels = [f"<{b[0]:g}"] + [f"{b[i]:g}-{b[i + 1] - 1:g}" for i in range(len(b) - 1)] + [f">={b[-1]:g}"]
    cut = pd.cut(a, [-np.inf, *b, np.inf], right=False, labels=labels)
    return cut.astype(object).where(a.notna(), "unknown")


def bin_values(values: Any, bins: Sequence[float]) -> pd.Series:
    """Bin a numeric column like :func:`age_bands` (left-closed intervals)."""
    return age_bands(values, bins)


def cochran_q(aucs: Sequence[float], ses: Sequence[float]) -> tuple[float, int, float]:
    """Cochran's Q test that independent estimates share one value."""
    a = np.asarray(aucs, dtype=float)
    s = np.asarray(ses, dtype=float)
    ok = np.isfinite(a) & np.isfinite(s) & (s > 0)
    a, s = a[ok], s[ok]
    if a.size < 2:
        return float("nan"), 0, float("nan")
    w = 1.0 / s**2
    pooled = np.sum(w * a) / np.sum(w)
    q = float(np.sum(w * (a - pooled) ** 2))
    dof = int(a.size - 1)
    return q, dof, float(_st.chi2.sf(q, dof))


def subgroup_analysis(
    df: pd.DataFrame,
    *,
    truth: str,
    score: str,
    by: str,
    bins: Sequence[float] | None = None,
    min_n: int = 10,
    min_class: int = 2,
    alpha: float = 0.05,
    positive: Any = None,
) -> SubgroupResult:
    """AUC (DeLong CI) per subgroup and Cochran's Q test of heterogeneity.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per case (image, breast or exam: aggregate first with
        :func:`mammolens.stats.levels.aggregate_scores`).
    truth, score, by : str
        Truth (0/1), score and grouping columns.
    bins : list of float, optional
        Bin a numeric ``by`` column (e.g. age with ``(50, 60, 70)``); see :func:`age_bands`.
    min_n : int
        Groups with fewer cases get no AUC (note ``"too small"``) and a warning.
    min_class : int
        Fewer positives or negatives than this: no AUC (note ``"single class"`` when one
        class is absent, else ``"too few positives/negatives"``).
    alpha : float
        1 - confidence level.

    Returns
    -------
    SubgroupResult
        ``table`` (one row per group, missing group values as ``"unknown"``), Cochran's
        ``q``, ``df``, ``p`` over evaluable groups, and ``warnings``.
    """
    alpha = check_alpha(alpha)
    check_columns(df, [truth, score, by], what="subgroup_analysis")
    y = check_truth(df[truth], name=f"column {truth!r}", positive=positive)
    s = check_scores(df[score], name=f"column {score!r}")
    if bins is not None:
        if not pd.api.types.is_numeric_dtype(df[by]):
            raise StatsInputError(f"column {by!r}: bins need a numeric column")
        g = bin_values(df[by].to_numpy(), bins)
    else:
        g = df[by].astype(object).where(df[by].notna(), "unknown")
        g = g.map(lambda v: "unknown" if isinstance(v, str) and v.strip() == "" else v)
    g = pd.Series(np.asarray(g, dtype=object))
    groups = list(pd.unique(g))
    if bins is not None:
        groups.sort(key=_band_key)
    else:
        groups.sort(key=lambda v: (v == "unknown", str(v)))
    rows = []
    warns: list[str] = []
    for grp in groups:
        m = (g == grp).to_numpy()
        yy, ss = y[m], s[m]
        n = int(m.sum())
        npos = int(yy.sum())
        nneg = n - npos
        rec: dict[str, Any] = {
            "group": grp, "n": n, "n_pos": npos, "n_neg": nneg, "prevalence": npos / n if n else float("nan"),
            "auc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "se": float("nan"), "note": "",
        }
        if npos == 0 or nneg == 0:
            rec["note"] = "single class"
        elif n < min_n:
            rec["note"] = "too small"
        elif npos < min_class:
            rec["note"] = "too few positives"
        elif nneg < min_class:
            rec["note"] = "too few negatives"
        else:
            r = auc_ci(yy, ss, alpha=alpha)
            rec.update(auc=r.auc, ci_low=r.ci_low, ci_high=r.ci_high, se=r.se)
        if rec["note"]:
            warns.append(f"{by}={grp!r}: {rec['note']} (n={n}, positives={npos}, negatives={nneg}); no AUC")
        rows.append(rec)
    table = pd.DataFrame(rows, columns=["group", "n", "n_pos", "n_neg", "prevalence", "auc", "ci_low", "ci_high", "se", "note"])
    ok = table["note"] == ""
    q, dof, p = cochran_q(table.loc[ok, "auc"], table.loc[ok, "se"])
    if ok.sum() < 2:
        warns.append(f"{by}: fewer than two evaluable groups; no heterogeneity test")
    return SubgroupResult(table, q, dof, p, warns, by)


def _band_key(label: str) -> float:
    if label.startswith("<"):
        return -np.inf
    if label.startswith(">="):
        return float(label[2:])
    if label == "unknown":
        return np.inf
    return float(label.split("-")[0])
