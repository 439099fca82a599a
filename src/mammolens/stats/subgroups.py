"""Subgroup analysis: AUC per group (manufacturer, density, age band, ...) and heterogeneity.

Each group gets its AUC with a DeLong CI. Groups that are too small (fewer than
``min_n`` cases, or fewer than ``min_class`` positives or negatives) or single-class get a
row with a ``note`` and a warning, never an exception. Heterogeneity: Cochran's Q test of
equal AUCs across the (independent) evaluable groups,
``Q = sum_g w_g (AUC_g - AUC_w)^2`` with ``w_g = 1 / Var_g`` (DeLong), chi-square on
``G - 1`` df.

A group whose DeLong variance is zero (perfect separation, AUC 1 or 0, or all scores
tied) would get an infinite weight. Dropping it silently (the old behaviour) hides the
most extreme group from the test. It is kept, with the 0.5 continuity correction that
meta-analysis applies to zero cells (Haldane 1955; Sweeting et al. 2004): the AUC is the
proportion of concordant (positive, negative) pairs, so half a discordant pair is added,
``AUC' = (AUC N + 0.5) / (N + 1)`` with ``N = n_pos n_neg``, and the variance is the
Hanley & McNeil (1982) variance at ``AUC'`` (the DeLong variance is zero there by
construction). Each such group is listed in ``heterogeneity["corrected"]``, and groups left
out of the test (too small, single class) in ``heterogeneity["excluded"]``.

References
----------
.. [1] Cochran WG. The combination of estimates from different experiments. Biometrics
   1954;10:101-129.
.. [2] DeLong ER, DeLong DM, Clarke-Pearson DL. Biometrics 1988;44:837-845.
.. [3] Haldane JBS. The estimation and significance of the logarithm of a ratio of
   frequencies. Ann Hum Genet 1955;20:309-311.
.. [4] Sweeting MJ, Sutton AJ, Lambert PC. What to add to nothing? Use and avoidance of
   continuity corrections in meta-analysis of sparse data. Stat Med 2004;23:1351-1375.
.. [5] Hanley JA, McNeil BJ. Radiology 1982;143:29-36.
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
from mammolens.stats.roc import auc_ci, hanley_mcneil_se


@dataclass(frozen=True)
class SubgroupResult:
    """Per-group AUCs and Cochran's Q test of their equality."""

    table: pd.DataFrame  # group, n, n_pos, n_neg, prevalence, auc, ci_low, ci_high, se, auc_q, se_q, in_q, note
    q: float
    df: int
    p: float
    warnings: list[str] = field(default_factory=list)
    by: str = ""
    corrected: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        recs = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in self.table.to_dict("records")]
        return {
            "by": self.by,
            "groups": recs,
            "heterogeneity": {
                "q": self.q, "df": self.df, "p": self.p, "test": "cochran_q",
                "n_groups_tested": int(self.table["in_q"].sum()) if "in_q" in self.table else None,
                "corrected": [dict(c) for c in self.corrected],
                "excluded": [dict(e) for e in self.excluded],
            },
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
    """Cochran's Q test that independent estimates share one value.

    Every estimate needs a finite, positive standard error: a zero one would carry an
    infinite weight, and dropping it would silently change the test. Correct such an
    estimate first (as :func:`subgroup_analysis` does) or leave it out knowingly.
    """
    a = np.asarray(aucs, dtype=float)
    s = np.asarray(ses, dtype=float)
    if a.shape != s.shape:
        raise StatsInputError(f"cochran_q: {a.size} estimates but {s.size} standard errors")
    bad = ~(np.isfinite(a) & np.isfinite(s) & (s > 0))
    if bad.any():
        raise StatsInputError(
            f"cochran_q: {int(bad.sum())} estimate(s) without a finite positive standard error "
            f"(positions {np.flatnonzero(bad).tolist()}); correct or exclude them explicitly"
        )
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
        ``table`` (one row per group, missing group values as ``"unknown"``; ``auc_q``,
        ``se_q`` are the values entered in the test, ``in_q`` whether the group is in it),
        Cochran's ``q``, ``df``, ``p`` over evaluable groups, ``corrected`` (groups with a
        zero DeLong variance, entered with a continuity correction), ``excluded`` (groups
        left out, with the reason) and ``warnings``.
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
    corrected: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for grp in groups:
        m = (g == grp).to_numpy()
        yy, ss = y[m], s[m]
        n = int(m.sum())
        npos = int(yy.sum())
        nneg = n - npos
        rec: dict[str, Any] = {
            "group": grp, "n": n, "n_pos": npos, "n_neg": nneg, "prevalence": npos / n if n else float("nan"),
            "auc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "se": float("nan"),
            "auc_q": float("nan"), "se_q": float("nan"), "in_q": False, "note": "",
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
            rec.update(auc=r.auc, ci_low=r.ci_low, ci_high=r.ci_high, se=r.se, auc_q=r.auc, se_q=r.se, in_q=True)
            if not (np.isfinite(r.se) and r.se > 0):
                # zero DeLong variance: continuity-corrected AUC, Hanley-McNeil variance (module doc)
                pairs = npos * nneg
                a_cc = (r.auc * pairs + 0.5) / (pairs + 1)
                rec.update(auc_q=a_cc, se_q=hanley_mcneil_se(a_cc, npos, nneg))
                corrected.append({"group": grp, "auc": r.auc, "se_delong": r.se, "auc_used": a_cc, "se_used": rec["se_q"],
                                  "reason": "zero DeLong variance: continuity-corrected AUC (half a discordant pair), Hanley-McNeil SE"})
                warns.append(f"{by}={grp!r}: AUC {r.auc:.3f} has zero DeLong variance; in Cochran's Q with a continuity "
                             f"correction (AUC {a_cc:.4f}, SE {rec['se_q']:.4f})")
        if rec["note"]:
            warns.append(f"{by}={grp!r}: {rec['note']} (n={n}, positives={npos}, negatives={nneg}); no AUC")
            excluded.append({"group": grp, "reason": rec["note"], "n": n, "n_pos": npos, "n_neg": nneg})
        rows.append(rec)
    cols = ["group", "n", "n_pos", "n_neg", "prevalence", "auc", "ci_low", "ci_high", "se", "auc_q", "se_q", "in_q", "note"]
    table = pd.DataFrame(rows, columns=cols)
    ok = table["in_q"].astype(bool)
    if ok.sum() >= 2:
        q, dof, p = cochran_q(table.loc[ok, "auc_q"], table.loc[ok, "se_q"])
    else:
        q, dof, p = float("nan"), 0, float("nan")
        warns.append(f"{by}: fewer than two evaluable groups; no heterogeneity test")
    return SubgroupResult(table, q, dof, p, warns, by, corrected, excluded)


def _band_key(label: str) -> float:
    if label.startswith("<"):
        return -np.inf
    if label.startswith(">="):
        return float(label[2:])
    if label == "unknown":
        return np.inf
    return float(label.split("-")[0])
