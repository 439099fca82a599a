"""Shared by the evaluation modules: constants, errors, the result object, and thin adapters
from :mod:`mammolens.stats` results to the JSON shapes of ``results.json`` (every number
is computed in stats; these only format).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.errors import MammolensError

LEVELS = ("image", "breast", "exam")


RESULTS_SCHEMA_VERSION = 1


SUBGROUP_VARIABLES = ("manufacturer", "density", "age_band")


#: age bands (years): <40, 40-49, 50-59, 60-69, >=70
AGE_BINS = (40, 50, 60, 70)


PREDICTION_REQUIRED = ("image_id", "score")


class EvaluationError(MammolensError):
    """Evaluation inputs that cannot be evaluated (ids that do not match, one class...)."""


@dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote."""

    out: Path
    results: dict[str, Any]
    results_path: Path
    report_path: Path
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def headline(self) -> dict[str, Any]:
        """The few numbers a person wants first (AUCs with CIs, sens/spec at the op point)."""
        perf = self.results.get("performance", {})
        level = self.results.get("primary_level", "image")
        head: dict[str, Any] = {"level": level}
        for lv, p in perf.items():
            head[f"auc_{lv}"] = p["auc"]
        p = perf.get(level, {})
        m = p.get("metrics", {})
        for k in ("sensitivity", "specificity", "accuracy"):
            if k in m:
                head[k] = m[k]
        if p.get("operating_point"):
            head["threshold"] = p["operating_point"].get("threshold")
            head["threshold_chosen_on"] = p["operating_point"].get("chosen_on")
        cmp_ = self.results.get("comparison")
        if cmp_:
            head["delong_p_vs_baseline"] = cmp_["levels"].get(level, {}).get("delong", {}).get("p_value")
        rs = self.results.get("reader_study")
        if rs:
            head["reader_auc_unaided"] = rs.get("reader_average", {}).get("unaided")
            head["reader_auc_aided"] = rs.get("reader_average", {}).get("aided")
        ben = self.results.get("performance_benign")
        if ben and ben.get("levels", {}).get("image"):  # secondary: the benign output
            head["benign_auc_image"] = ben["levels"]["image"]["auc"]
        head["report"] = str(self.report_path)
        return head


# ----------------------------------------------------------------------------- helpers
def _d(obj: Any) -> Any:
    """A stats result (dataclass with to_dict) as a JSON-friendly dict."""
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, dict):
        return obj
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj):
        return asdict(obj)
    return obj


def _f(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ci(est: Any, lo: Any, hi: Any, **extra: Any) -> dict[str, Any]:
    return {"estimate": _f(est), "ci_low": _f(lo), "ci_high": _f(hi), **extra}


# ----------------------------------------------------------------------------- stats facade
# Thin adapters from mammolens.stats results to the JSON shapes of results.json; every
# statistic itself is computed in mammolens.stats.
def _auc(y: np.ndarray, s: np.ndarray, clusters: np.ndarray | None = None) -> dict[str, Any]:
    from mammolens.stats.roc import auc_ci

    r = auc_ci(y, s, method="delong", clusters=clusters)
    d = _d(r)
    d["method"] = "delong_clustered" if clusters is not None else "delong"
    return d


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from mammolens.stats.roc import roc_curve

    c = roc_curve(y, s)
    return c.fpr, c.tpr, c.thresholds


def _roc_band(y: np.ndarray, s: np.ndarray, clusters: np.ndarray | None, *, n_boot: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from mammolens.stats.roc import roc_band

    return roc_band(y, s, clusters=clusters, n_boot=n_boot, seed=seed)


def _operating_point(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    from mammolens.stats.operating import operating_point

    return _d(operating_point(y, s, method="youden"))


def _binary_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, Any]:
    from mammolens.stats.operating import binary_metrics

    dec = (s >= threshold).astype(np.int8)
    out: dict[str, Any] = {k: _d(v) for k, v in binary_metrics(y, dec).items()}
    out.update(tp=int(((y == 1) & (dec == 1)).sum()), fp=int(((y == 0) & (dec == 1)).sum()),
               tn=int(((y == 0) & (dec == 0)).sum()), fn=int(((y == 1) & (dec == 0)).sum()))
    return out


def _threshold_table(y: np.ndarray, s: np.ndarray, thresholds: Sequence[float]) -> pd.DataFrame:
    from mammolens.stats.operating import threshold_table

    t = threshold_table(y, s, thresholds=list(thresholds))
    return t if isinstance(t, pd.DataFrame) else pd.DataFrame(_d(t))


def _mcnemar(y: np.ndarray, dec_a: np.ndarray, dec_b: np.ndarray) -> dict[str, Any]:
    from mammolens.stats.mcnemar import mcnemar_test

    return _d(mcnemar_test(dec_a.astype(np.int8), dec_b.astype(np.int8), y_true=y))


def _proportion(k: int, n: int) -> dict[str, Any]:
    from mammolens.stats.operating import proportion_ci

    return _d(proportion_ci(k, n, method="wilson"))


def _age_bands(age: pd.Series) -> pd.Series:
    from mammolens.stats.subgroups import age_bands

    return pd.Series(np.asarray(age_bands(age, AGE_BINS), dtype=object), index=age.index).astype(str).replace({"nan": "unknown", "": "unknown", "<NA>": "unknown"})


def _subgroups(tab: pd.DataFrame, variable: str) -> dict[str, Any]:
    from mammolens.stats.subgroups import subgroup_analysis

    if variable == "age_band" and "age" in tab.columns:
        # bin the numeric age (bands then sort by age, not alphabetically)
        res = _d(subgroup_analysis(tab, by="age", bins=AGE_BINS, truth="label", score="score"))
        res["by"] = "age_band"
        return res
    return _d(subgroup_analysis(tab, by=variable, truth="label", score="score"))


def _metric_value(m: dict[str, Any], key: str) -> dict[str, Any]:
    v = m.get(key)
    if isinstance(v, dict):
        return _ci(v.get("estimate", v.get("value")), v.get("ci_low"), v.get("ci_high"),
                   **{k: v[k] for k in ("k", "n") if k in v})
    return _ci(v, m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high"))


def _version() -> str:
    try:
        from mammolens import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"
