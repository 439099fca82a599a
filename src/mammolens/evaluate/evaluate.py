"""Evaluate a predictions table against the manifest: results.json, tables, figures, report.

:func:`evaluate` joins the image-level predictions (``image_id, score`` and optionally
``breast_score, exam_score, heatmap, overlay, model``) with the manifest's truth and
covariates, and computes every figure of the report with :mod:`mammolens.stats`:

* cohort counts and the inclusion flow (with the QC exclusions and their reasons);
* AUC with its DeLong 95% CI at image, breast and exam level (image/breast CIs are
  clustered by patient: Obuchowski 1997), ROC curves, the threshold table, and
  sensitivity/specificity/accuracy at an operating point chosen on the validation split
  (Youden index) and applied unchanged to the evaluated split;
* model vs baseline (paired DeLong test, McNemar test at each model's operating point);
* subgroups (manufacturer, density, age band) with a heterogeneity test;
* a reader study (per-reader AUCs, reader-average AUC unaided and aided, MRMC analysis,
  AI vs readers) when reads are given;
* localisation of malignant lesions by the heatmaps (pointing-game hit rate, Dice) and a
  gallery of true positives, false negatives and false positives; heatmap acceptability;
* calibration, and a model card.

All numbers land in ``results.json`` (keys documented in docs/evaluate.md), every table
in ``tables/*.csv``, every figure in ``figures/*.png|svg``, and all of it in a
self-contained ``report.html``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.errors import MammolensError
from mammolens.jsonio import to_json
from mammolens.qc import QCTable

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


def _read_table(path_or_df: str | Path | pd.DataFrame, *, what: str) -> tuple[pd.DataFrame, str]:
    if isinstance(path_or_df, pd.DataFrame):
        return path_or_df.copy(), f"<{what} DataFrame>"
    p = Path(path_or_df)
    if not p.exists():
        raise EvaluationError(f"{p}: {what} file not found")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, dtype={"image_id": str, "patient_id": str, "study_id": str, "case": str, "reader": str})
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        raise EvaluationError(f"{p}: cannot read {what} ({type(e).__name__}: {e})") from None
    return df, str(p)


def load_predictions(
    path_or_df: str | Path | pd.DataFrame, *, what: str = "predictions", score: str = "score"
) -> tuple[pd.DataFrame, str]:
    """Read and validate an image-level predictions table (CSV/Parquet or a DataFrame).

    Required columns: ``image_id`` and the score column (finite numbers; ``score`` unless
    ``score`` names another column, e.g. ``malignant`` or ``prob`` of an external model's
    CSV). Optional: ``breast_score``, ``exam_score``, ``heatmap``, ``overlay``, ``model``,
    ``split``. The chosen column is returned as ``score``; with a column other than
    ``score`` the table's own ``breast_score`` / ``exam_score`` roll-ups (of some other
    score) are dropped, and breast/exam scores are the maximum over images.
    """
    df, src = _read_table(path_or_df, what=what)
    if score != "score":
        if score not in df.columns:
            raise EvaluationError(f"{src}: {what} have no score column {score!r} (have {list(df.columns)})")
        df = df.drop(columns=[c for c in ("score", "breast_score", "exam_score") if c in df.columns])
        df = df.rename(columns={score: "score"})
    missing = [c for c in PREDICTION_REQUIRED if c not in df.columns]
    if missing:
        hint = ""
        if "score" in missing:
            cands = [c for c in df.columns if c.lower() in ("malignant", "prob", "probability", "p_malignant", "malignancy", "pred", "prediction")]
            hint = f"; name the score column with --score COL{f' (e.g. --score {cands[0]})' if cands else ''}"
        raise EvaluationError(f"{src}: {what} lack required column(s) {missing} (have {list(df.columns)}){hint}")
    df["image_id"] = df["image_id"].astype(str).str.strip()
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].unique()[:5].tolist()
        raise EvaluationError(f"{src}: duplicate image_id(s) in {what}: {dup}")
    for c in ("score", "breast_score", "exam_score"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    bad = ~np.isfinite(df["score"].to_numpy(dtype=float))
    col = f"score column {score!r}" if score != "score" else "score"
    if bad.all():
        raise EvaluationError(f"{src}: no finite {col} in {what}")
    if bad.any():
        raise EvaluationError(f"{src}: {int(bad.sum())} {what} row(s) with a missing or non-numeric {col}")
    return df, src


def _model_name(preds: pd.DataFrame, default: str) -> str:
    if "model" in preds.columns:
        vals = [v for v in preds["model"].dropna().astype(str).unique() if v]
        if len(vals) == 1:
            return vals[0]
    return default


def join_predictions(preds: pd.DataFrame, manifest: pd.DataFrame, *, source: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Join predictions with the manifest on ``image_id``; stop if none match."""
    ids = set(manifest["image_id"])
    matched = preds["image_id"].isin(ids)
    info = {
        "n_predictions": int(len(preds)),
        "n_matched": int(matched.sum()),
        "n_unmatched_predictions": int((~matched).sum()),
    }
    if info["n_matched"] == 0:
        ex = preds["image_id"].head(3).tolist()
        raise EvaluationError(
            f"{source}: none of the {len(preds)} prediction image_id(s) is in the manifest "
            f"(e.g. {ex}); is this the right manifest?"
        )
    keep = [c for c in preds.columns if c not in manifest.columns or c == "image_id"]
    extra = [c for c in ("score", "breast_score", "exam_score") if c in preds.columns and c not in keep]
    df = manifest.merge(preds[keep + extra], on="image_id", how="inner", suffixes=("", "_pred"))
    return df, info


def level_table(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """One row per image / breast / exam: key, truth ``label``, ``score`` and covariates.

    Uses the predictions' own ``breast_score`` / ``exam_score`` roll-ups when present,
    otherwise :func:`mammolens.stats.levels.aggregate_scores` (max over images).
    """
    from mammolens.stats.levels import aggregate_scores, level_keys

    keep = ["split", "manufacturer", "density", "age", "age_band", "dataset"]
    keep = [c for c in keep if c in df.columns]
    base = df.copy()
    base["label"] = base["label"].astype(float)
    if level == "image":
        out = base.copy()
        out["key"] = out["image_id"]
        return out
    col = f"{level}_score"
    keys = level_keys(level)
    # the predictions' own roll-up (constant within a breast / exam) when complete, sorted by key
    own = col in base.columns and base[col].notna().all()
    out = aggregate_scores(base, level=level, score=col if own else "score", truth="label", how="max",
                           keep=keep, sort=own, missing_keys="group" if own else "raise")
    out = out.rename(columns={col: "score"})
    if own:
        out["label"] = out["label"].astype(float)
        out = out[[*keys, "score", "label", "n_images", *keep]]
    out = out.reset_index(drop=True)
    out["key"] = out[keys].astype(str).agg("|".join, axis=1)
    return out


def _labelled(tab: pd.DataFrame) -> pd.DataFrame:
    t = tab[tab["label"].notna()].copy()
    t["label"] = t["label"].astype(int)
    return t


def _check_two_classes(tab: pd.DataFrame, *, split: str, level: str, source: str) -> None:
    n_pos = int((tab["label"] == 1).sum())
    n_neg = int((tab["label"] == 0).sum())
    if n_pos == 0 or n_neg == 0:
        which = "malignant" if n_pos == 0 else "non-malignant"
        raise EvaluationError(
            f"{source}: split {split!r} has no {which} {level}s ({n_pos} malignant, {n_neg} not): "
            "AUC, sensitivity and specificity are undefined"
        )


# ----------------------------------------------------------------------------- QC + cohort
def discover_qc_files(manifest_path: Path | None) -> list[Path]:
    """QC tables beside the manifest (``qc.csv``, ``*qc*.csv``) and in a sibling ``cache/``."""
    if manifest_path is None:
        return []
    d = manifest_path.resolve().parent
    found: list[Path] = []
    for pat in ("qc.csv", "*qc*.csv", "*/qc.csv"):
        for p in sorted(d.glob(pat)):
            if p.is_file() and p not in found and p.resolve() != manifest_path.resolve():
                found.append(p)
    return found


def _read_qc(paths: Sequence[Path]) -> tuple[QCTable, list[str]]:
    qc = QCTable()
    used = []
    for p in paths:
        try:
            qc.extend(QCTable.read_csv(p))
            used.append(str(p))
        except (OSError, KeyError, UnicodeDecodeError) as e:
            raise EvaluationError(f"{p}: cannot read QC table ({type(e).__name__}: {e})") from None
    return qc, used


def _outcome(df: pd.DataFrame) -> pd.Series:
    if "outcome" in df.columns:
        o = df["outcome"].astype(str).str.lower()
        o = o.where(o.isin(["malignant", "benign", "normal"]), "")
    else:
        o = pd.Series("", index=df.index)
    lab = df["label"].astype("Float64")
    o = o.mask((o == "") & (lab == 1), "malignant")
    o = o.mask((o == "") & (lab == 0), "not malignant")
    return o.mask(o == "", "unknown")


def cohort_section(manifest: pd.DataFrame, *, age_band_fn: Callable[[Any], Any]) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Counts by split, by manufacturer, density and age band (images, exams, patients)."""
    m = manifest.copy()
    m["outcome_"] = _outcome(m)
    m["split_"] = m["split"].replace("", "unassigned")
    m["age_band"] = age_band_fn(m["age"])
    order = {"malignant": 3, "benign": 2, "normal": 1, "not malignant": 1, "unknown": 0}
    m["_rank"] = m["outcome_"].map(order)

    def counts(d: pd.DataFrame) -> dict[str, int]:
        ex = d.groupby(["patient_id", "study_id"])["_rank"].max()
        res = {
            "patients": int(d["patient_id"].nunique()),
            "exams": int(len(ex)),
            "images": int(len(d)),
        }
        for name in ("malignant", "benign", "normal", "not malignant", "unknown"):
            k = name.replace(" ", "_")
            res[f"{k}_images"] = int((d["outcome_"] == name).sum())
        res["malignant_exams"] = int((ex == 3).sum())
        return res

    by_split = {}
    for s in ["train", "val", "test", "unassigned"]:
        d = m[m["split_"] == s]
        if len(d):
            by_split[s] = counts(d)
    by_split["all"] = counts(m)
    tables = {"cohort_by_split": pd.DataFrame([{"split": k, **v} for k, v in by_split.items()])}
    section: dict[str, Any] = {"by_split": by_split}
    splits = [x for x in ("train", "val", "test", "unassigned") if x in by_split]
    for var in ("manufacturer", "density", "age_band"):
        rows = []
        vals = m[var].astype(str).replace({"": "unknown", "nan": "unknown"})
        for v in sorted(vals.unique(), key=lambda x: (x == "unknown", _band_order(x) if var == "age_band" else 0, x)):
            d = m[vals == v]
            c = counts(d)
            row: dict[str, Any] = {"value": v, **{k: c[k] for k in ("patients", "exams", "images", "malignant_images", "malignant_exams")}}
            for s in splits:
                dd = d[d["split_"] == s]
                row[f"images_{s}"] = int(len(dd))
                row[f"malignant_images_{s}"] = int((dd["outcome_"] == "malignant").sum())
            rows.append(row)
        section[f"by_{var}"] = rows
        tables[f"cohort_by_{var}"] = pd.DataFrame(rows)
    return section, tables


def _band_order(label: str) -> float:
    """Sort key of an age-band label (``<40``, ``40-49``, ..., ``>=70``)."""
    t = label.lstrip("<>=")
    try:
        v = float(t.split("-")[0])
    except ValueError:
        return float("inf")
    return v - 0.5 if label.startswith("<") else v + 0.5 if label.startswith(">") else v


def flow_section(
    manifest: pd.DataFrame,
    qc: QCTable,
    *,
    split: str,
    n_in_split: int,
    n_without_prediction: int,
    n_without_label: int,
    n_analysed: dict[str, int],
) -> list[dict[str, Any]]:
    """The inclusion flow: inputs -> QC exclusions per stage (with reasons) -> split -> analysed.

    A QC rejection counts at its own ``stage`` (ingest, preprocess, ...); images rejected
    after ingest whose id is still in the manifest count once, at their first stage.
    """
    ids = set(manifest["image_id"])
    rej = qc.rejected
    stages: list[str] = []
    for r in rej:
        if (r.stage or "qc") not in stages:
            stages.append(r.stage or "qc")
    order = {"ingest": 0, "preprocess": 1}
    stages.sort(key=lambda st: order.get(st, 2))
    seen: set[str] = set()
    steps = []
    n_removed_outside_manifest = 0
    for st in stages:
        rows = [r for r in rej if (r.stage or "qc") == st and (not r.image_id or r.image_id not in seen)]
        keys = {r.image_id or r.path for r in rows}
        seen |= {r.image_id for r in rows if r.image_id}
        n_removed_outside_manifest += len({k for k in keys if k not in ids})
        steps.append({"step": f"rejected at {st} (QC)", "n": None, "excluded": len(keys),
                      "reasons": dict(QCTable(rows).reasons("reject").most_common())})
    n_manifest = len(manifest)
    flow = [{"step": "inputs found", "n": n_manifest + n_removed_outside_manifest, "excluded": None, "reasons": {}}]
    flow += steps
    flow += [
        {"step": "images in manifest", "n": n_manifest, "excluded": None, "reasons": {}},
        {"step": f"images in split {split!r}", "n": n_in_split, "excluded": None, "reasons": {}},
        {"step": "no prediction for image", "n": None, "excluded": n_without_prediction, "reasons": {}},
        {"step": "no ground-truth label", "n": None, "excluded": n_without_label, "reasons": {}},
        {"step": "analysed", "n": n_analysed.get("image", 0), "excluded": None, "reasons": {},
         "breasts": n_analysed.get("breast", 0), "exams": n_analysed.get("exam", 0)},
    ]
    return flow


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


# ----------------------------------------------------------------------------- sections
def performance_section(
    tabs: dict[str, pd.DataFrame],
    val_tabs: dict[str, pd.DataFrame] | None,
    *,
    label: str,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame], dict[str, dict[str, Any]]]:
    """AUC (DeLong), ROC, threshold table and the validation-chosen operating point per level."""
    section: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    curves: dict[str, dict[str, Any]] = {}
    for level, tab in tabs.items():
        y = tab["label"].to_numpy(int)
        s = tab["score"].to_numpy(float)
        clusters = tab["patient_id"].to_numpy() if level != "exam" else None
        auc = _auc(y, s, clusters)
        # operating point: chosen on validation, applied here
        vt = None if val_tabs is None else val_tabs.get(level)
        if vt is not None and len(vt) and vt["label"].nunique() == 2:
            op = _operating_point(vt["label"].to_numpy(int), vt["score"].to_numpy(float))
            chosen_on = "val"
        else:
            op = _operating_point(y, s)
            chosen_on = "evaluated split (no validation predictions: optimistic)"
        thr = float(op["threshold"])
        measured = {k: v for k, v in op.items() if k not in ("threshold", "method", "target", "min_positive_score")}
        op = {"threshold": thr, "method": "youden", "chosen_on": chosen_on, "on_chosen_split": measured}
        m = _binary_metrics(y, s, thr)
        metrics = {k: _metric_value(m, k) for k in ("sensitivity", "specificity", "accuracy", "ppv", "npv") if k in m or f"{k}_ci_low" in m}
        for k in ("tp", "fp", "tn", "fn"):
            if k in m:
                metrics[k] = int(m[k])
        fpr, tpr, _ = _roc(y, s)
        grid, lo, hi = _roc_band(y, s, clusters, seed=seed)
        dec = s >= thr
        pt = (float(dec[y == 0].mean()), float(dec[y == 1].mean()))
        qs = sorted({round(float(q), 4) for q in np.quantile(s, [0.1, 0.25, 0.5, 0.75, 0.9])} | {0.5, thr})
        tt = _threshold_table(y, s, qs)
        tables[f"threshold_table_{level}"] = tt
        tables[f"roc_{level}"] = pd.DataFrame({"fpr": fpr, "tpr": tpr})
        section[level] = {
            "n": int(len(y)),
            "n_pos": int(y.sum()),
            "n_neg": int((1 - y).sum()),
            "auc": auc,
            "operating_point": op,
            "metrics": metrics,
            "threshold_table": f"tables/threshold_table_{level}.csv",
        }
        curves[level] = {"label": label, "fpr": fpr, "tpr": tpr, "auc": auc["auc"], "ci_low": auc["ci_low"],
                         "ci_high": auc["ci_high"], "band": (grid, lo, hi), "point": pt}
    return section, tables, curves


def comparison_section(
    tabs_a: dict[str, pd.DataFrame],
    tabs_b: dict[str, pd.DataFrame],
    ops_a: dict[str, float],
    ops_b: dict[str, float],
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Paired DeLong test and McNemar test (each model at its own operating point)."""
    from mammolens.stats.roc import delong_test

    levels: dict[str, Any] = {}
    rows = []
    for level, ta in tabs_a.items():
        tb = tabs_b[level]
        j = ta[["key", "label", "score"]].merge(tb[["key", "score"]], on="key", suffixes=("_a", "_b"))
        if len(j) < len(ta):
            raise EvaluationError(
                f"the comparison predictions lack {len(ta) - len(j)} of the {len(ta)} {level}(s) evaluated; "
                "both models must be scored on the same cases"
            )
        y = j["label"].to_numpy(int)
        a, b = j["score_a"].to_numpy(float), j["score_b"].to_numpy(float)
        dl = _d(delong_test(y, a, b))
        dec_a, dec_b = a >= ops_a[level], b >= ops_b[level]
        mc = _mcnemar(y, dec_a, dec_b)
        levels[level] = {"n": int(len(y)), "delong": dl, "mcnemar": mc,
                         "threshold_model": ops_a[level], "threshold_baseline": ops_b[level]}
        rows.append({"level": level, "n": len(y), "auc_model": dl.get("auc_a"), "auc_baseline": dl.get("auc_b"),
                     "difference": dl.get("difference"), "diff_ci_low": dl.get("ci_low"),
                     "diff_ci_high": dl.get("ci_high"), "delong_p": dl.get("p_value"),
                     "mcnemar_p": mc.get("p_value")})
    return {"levels": levels}, {"comparison": pd.DataFrame(rows)}


def subgroup_section(tab: pd.DataFrame, *, variables: Sequence[str] = SUBGROUP_VARIABLES) -> tuple[dict[str, Any], pd.DataFrame]:
    """AUC with CI per subgroup and the heterogeneity test, per variable."""
    out: dict[str, Any] = {}
    rows = []
    t = tab.copy()
    for var in variables:
        if var not in t.columns:
            continue
        t[var] = t[var].astype(str).replace({"": "unknown", "nan": "unknown", "None": "unknown"})
        if t[var].nunique() < 2:  # one value: nothing to compare
            out[var] = {"skipped": f"only one {var} value ({t[var].iloc[0]!r})"}
            continue
        res = _subgroups(t, var)
        out[var] = res
        for g in res.get("groups", []):
            grp = str(g.get("group", g.get("value")))
            note = g.get("note", "")
            corrected = {str(c["group"]) for c in (res.get("heterogeneity") or {}).get("corrected", [])}
            if grp in corrected:
                note = "zero SE: continuity-corrected in Cochran's Q"
            rows.append({"variable": var, "subgroup": grp, "n": g.get("n"),
                         "n_pos": g.get("n_pos"), "auc": _f(g.get("auc")), "ci_low": _f(g.get("ci_low")),
                         "ci_high": _f(g.get("ci_high")), "in_heterogeneity_test": bool(g.get("in_q", False)), "note": note})
    return out, pd.DataFrame(rows, columns=["variable", "subgroup", "n", "n_pos", "auc", "ci_low", "ci_high",
                                            "in_heterogeneity_test", "note"])


def load_reads(path_or_df: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Read a reader-study table: long format ``reader, case, modality, truth, score``.

    ``modality`` must take the values ``unaided`` and ``aided`` (case-insensitive); an
    optional ``heatmap_acceptable`` column (0/1, empty when not rated) carries ratings.
    """
    df, src = _read_table(path_or_df, what="reads")
    missing = [c for c in ("reader", "case", "modality", "truth", "score") if c not in df.columns]
    if missing:
        raise EvaluationError(f"{src}: reads lack required column(s) {missing} (have {list(df.columns)})")
    df["reader"] = df["reader"].astype(str)
    df["case"] = df["case"].astype(str)
    df["modality"] = df["modality"].astype(str).str.strip().str.lower()
    bad = sorted(set(df["modality"]) - {"unaided", "aided"})
    if bad:
        raise EvaluationError(f"{src}: modality must be 'unaided' or 'aided', found {bad}")
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    df["truth"] = pd.to_numeric(df["truth"], errors="coerce")
    if df["score"].isna().any() or df["truth"].isna().any():
        raise EvaluationError(f"{src}: {int(df['score'].isna().sum() + df['truth'].isna().sum())} read(s) with a missing score or truth")
    return df, src


def _match_cases(reads: pd.DataFrame, tabs: dict[str, pd.DataFrame], src: str) -> tuple[str, pd.DataFrame]:
    """Which level the reads' cases are (image_id, breast key or study_id); AI score per case."""
    cases = set(reads["case"])
    cands = {
        "image": tabs["image"].assign(case=tabs["image"]["image_id"].astype(str)),
        "exam": tabs["exam"].assign(case=tabs["exam"]["study_id"].astype(str)),
        "breast": tabs["breast"].assign(case=tabs["breast"]["study_id"].astype(str) + ":" + tabs["breast"]["laterality"].astype(str)),
    }
    best, best_n = None, 0
    for level, t in cands.items():
        n = len(cases & set(t["case"]))
        if n > best_n:
            best, best_n = level, n
    if best is None:
        raise EvaluationError(f"{src}: none of the {len(cases)} read case id(s) matches an image_id, study_id or study_id:laterality of the evaluated split")
    if best_n < len(cases):
        raise EvaluationError(f"{src}: {len(cases) - best_n} of {len(cases)} read case(s) are not in the evaluated split at {best} level")
    t = cands[best]
    return best, t[t["case"].isin(cases)][["case", "label", "score"]].rename(columns={"score": "ai_score"})


def reader_section(reads: pd.DataFrame, tabs: dict[str, pd.DataFrame], *, src: str) -> tuple[dict[str, Any], dict[str, pd.DataFrame], dict[str, Any]]:
    """Per-reader AUCs, reader-average AUC per modality, MRMC (OR and DBM), AI vs readers."""
    from mammolens.stats.mrmc import ai_vs_readers, mrmc
    from mammolens.stats.roc import auc_ci, roc_curve

    level, ai = _match_cases(reads, tabs, src)
    j = reads.merge(ai, on="case")
    if (j["truth"].astype(int) != j["label"].astype(int)).any():
        n = int((j["truth"].astype(int) != j["label"].astype(int)).sum())
        raise EvaluationError(f"{src}: {n} read(s) have a truth that disagrees with the manifest label")
    per_reader = []
    curves = []
    for (reader, modality), d in j.groupby(["reader", "modality"], sort=True):
        y, s = d["truth"].to_numpy(int), d["score"].to_numpy(float)
        a = _d(auc_ci(y, s, method="delong"))
        c = roc_curve(y, s)
        # a reader's own operating point: recall when the malignancy score >= 50 (of 100)
        cut = 50.0 if s.max() > 1.0 else 0.5
        dec = s >= cut
        point = (float(dec[y == 0].mean()), float(dec[y == 1].mean()))
        per_reader.append({"reader": reader, "modality": modality, "n_cases": int(len(d)), "auc": a["auc"],
                           "ci_low": a["ci_low"], "ci_high": a["ci_high"], "sensitivity_at_50": point[1],
                           "specificity_at_50": 1 - point[0]})
        curves.append({"reader": reader, "modality": modality, "fpr": c.fpr, "tpr": c.tpr, "auc": a["auc"], "point": point})
    long = j[["reader", "case", "modality", "truth", "score"]]
    res_or = _d(mrmc(long, method="or"))
    try:
        res_dbm = _d(mrmc(long, method="dbm"))
    except MammolensError as e:
        res_dbm = {"error": str(e)}
    ai_cases = ai.drop_duplicates("case")
    unaided = long[long["modality"] == "unaided"]
    ai_map = pd.Series(ai_cases["ai_score"].to_numpy(float), index=ai_cases["case"].to_numpy())
    avr = _d(ai_vs_readers(unaided, ai_map))
    ai_auc = _d(auc_ci(ai_cases["label"].to_numpy(int), ai_cases["ai_score"].to_numpy(float), method="delong"))
    c = roc_curve(ai_cases["label"].to_numpy(int), ai_cases["ai_score"].to_numpy(float))
    ai_curve = {"fpr": c.fpr, "tpr": c.tpr, "auc": ai_auc["auc"]}
    avg: dict[str, Any] = {}
    for rec in res_or.get("modalities", []):
        avg[str(rec.get("modality"))] = rec
    comps = res_or.get("comparisons") or []
    aided_minus_unaided = None
    for cp in comps:
        a, b = str(cp.get("modality_a")), str(cp.get("modality_b"))
        if {a, b} == {"aided", "unaided"}:
            sign = 1.0 if a == "aided" else -1.0
            lo, hi = cp.get("ci_low"), cp.get("ci_high")
            aided_minus_unaided = {
                "difference": sign * cp["difference"],
                "ci_low": sign * (lo if sign > 0 else hi), "ci_high": sign * (hi if sign > 0 else lo),
                "p_value": cp.get("p_value"), "df": cp.get("df"),
            }
    section = {
        "case_level": level,
        "n_readers": int(reads["reader"].nunique()),
        "n_cases": int(reads["case"].nunique()),
        "per_reader": per_reader,
        "reader_average": avg,
        "aided_minus_unaided": aided_minus_unaided,
        "mrmc_or": res_or,
        "mrmc_dbm": res_dbm,
        "ai": ai_auc,
        "ai_vs_readers": avr,
    }
    if "heatmap_acceptable" in reads.columns:
        r = pd.to_numeric(reads["heatmap_acceptable"], errors="coerce").dropna()
        if len(r):
            section["heatmap_acceptability"] = {**_proportion(int(r.sum()), int(len(r))), "n_ratings": int(len(r)),
                                                "n_acceptable": int(r.sum())}
    rtables = {"reader_aucs": pd.DataFrame(per_reader)}
    if avr.get("per_reader"):
        rtables["ai_vs_readers"] = pd.DataFrame(avr["per_reader"])
    return section, rtables, {"ai": ai_curve, "readers": curves}


# ----------------------------------------------------------------------------- interpretability
def localisation_section(img: pd.DataFrame, *, kind: str | None, base_dir: Path | None,
                         threshold: float = 0.5) -> tuple[dict[str, Any], pd.DataFrame]:
    """Pointing-game hit rate, Dice, IoU and FROC of the heatmaps of malignant images with annotations.

    Scored by :func:`mammolens.stats.localization.score_localization` in ORIGINAL image
    geometry, as ``mammolens stats localization`` does (same inputs, same numbers); a hit is
    the heatmap's maximum falling inside an annotated malignant lesion (Zhang et al. 2018,
    "Top-down neural attention by excitation backprop"); Dice binarises ``heatmap >= threshold``.
    """
    from mammolens.data.heatmap_io import heatmap_and_lesion_mask
    from mammolens.stats.localization import score_localization

    used_kind = kind
    pos = img[(img["label"] == 1)]
    if "heatmap" not in pos.columns:
        return {"skipped": "predictions have no heatmap column"}, pd.DataFrame()
    n_no_heat = n_no_lesion = 0
    heats: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for r in pos.itertuples(index=False):
        hp = getattr(r, "heatmap", "")
        if not isinstance(hp, str) or not hp or not Path(hp).exists():
            n_no_heat += 1
            continue
        try:
            heat, mask, used_kind = heatmap_and_lesion_mask(hp, getattr(r, "lesions", ""), kind=kind, base_dir=base_dir)
        except KeyError as e:
            raise EvaluationError(str(e).strip("'\"")) from None
        except (ValueError, TypeError):  # unreadable or empty annotation: nothing to score against
            mask = None
        if mask is None:
            n_no_lesion += 1
            continue
        heats.append(heat)
        masks.append(mask)
        rows.append({"image_id": r.image_id, "score": r.score})
    if not rows:
        return {"skipped": "no malignant image with both a heatmap and an annotated lesion",
                "n_without_heatmap": n_no_heat, "n_without_lesion": n_no_lesion}, pd.DataFrame(
                    columns=["image_id", "score", "hit", "dice", "iou"])
    res = score_localization(heats, masks, threshold=threshold)
    table = pd.DataFrame([{**r, "hit": int(x["hit"]), "dice": x["dice"], "iou": x["iou"]}
                          for r, x in zip(rows, res.per_image, strict=True)],
                         columns=["image_id", "score", "hit", "dice", "iou"])
    return {
        "heatmap_kind": used_kind,
        "geometry": "original",
        "n_images": res.n_images,
        "n_without_heatmap": n_no_heat,
        "n_without_lesion": n_no_lesion,
        "hit_rate": _d(res.hit_rate),
        "dice": {"mean": _f(res.dice_mean), "median": _f(res.dice_median), "q1": _f(res.dice_q1), "q3": _f(res.dice_q3)},
        "dice_threshold": res.threshold,
        "iou_mean": _f(res.iou_mean),
        "froc": {"sensitivity_at_fps": {f"{k:g}": v for k, v in res.froc.at_fps.items()}, "cpm": res.froc.cpm,
                 "n_lesions": res.froc.n_lesions},
    }, table


def _thumbnail(row: Any, *, kind: str | None, base_dir: Path | None, size: int = 240) -> Any:
    """An overlay thumbnail (PIL image) in the original geometry: the predict overlay PNG,
    else :func:`mammolens.explain.thumbnails.overlay_thumbnail` (image + heatmap + lesions)."""
    from PIL import Image

    from mammolens.explain.thumbnails import overlay_thumbnail

    ov = getattr(row, "overlay", "")
    if isinstance(ov, str) and ov and Path(ov).exists():
        im = Image.open(ov).convert("RGB")
        im.thumbnail((size, size))
        return im
    hp = getattr(row, "heatmap", "")
    if not isinstance(hp, str) or not hp or not Path(hp).exists():
        return None
    try:
        return overlay_thumbnail(getattr(row, "path", None), hp, kind=kind, lesions=getattr(row, "lesions", ""), base_dir=base_dir, size=size)
    except KeyError as e:
        raise EvaluationError(str(e).strip("'\"")) from None


def gallery_section(img: pd.DataFrame, threshold: float, *, n: int, kind: str | None, base_dir: Path | None, out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Up to ``n`` true positives, false negatives and false positives at the operating point."""
    sel = {
        "true_positive": img[(img["label"] == 1) & (img["score"] >= threshold)].sort_values("score", ascending=False),
        "false_negative": img[(img["label"] == 1) & (img["score"] < threshold)].sort_values("score", ascending=True),
        "false_positive": img[(img["label"] == 0) & (img["score"] >= threshold)].sort_values("score", ascending=False),
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for name, d in sel.items():
        items = []
        for r in d.head(n).itertuples(index=False):
            im = _thumbnail(r, kind=kind, base_dir=base_dir)
            entry = {"image_id": r.image_id, "score": float(r.score), "label": int(r.label), "file": None,
                     "laterality": str(getattr(r, "laterality", "") or ""), "view": str(getattr(r, "view", "") or "")}
            if im is not None:
                p = out_dir / "gallery" / f"{name}_{len(items) + 1}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                im.save(p)
                entry["file"] = str(p.relative_to(out_dir.parent))
            items.append(entry)
        out[name] = items
    return out


# ----------------------------------------------------------------------------- calibration
def calibration_section(y: np.ndarray, s: np.ndarray, *, n_bins: int = 10) -> tuple[dict[str, Any], pd.DataFrame]:
    """Reliability bins (Wilson CIs), Brier score, expected calibration error, and the
    calibration intercept/slope: :func:`mammolens.stats.calibration.calibration`."""
    from mammolens.stats.calibration import calibration

    r = calibration(y, s, n_bins=n_bins)
    return {"n": r.n, "brier": r.brier, "ece": r.ece, "calibration_intercept": r.calibration_intercept,
            "calibration_slope": r.calibration_slope, "bins": r.bins}, pd.DataFrame(r.bins)


# ----------------------------------------------------------------------------- main
def _resolve_paths(df: pd.DataFrame, base: Path | None) -> pd.DataFrame:
    for c in ("heatmap", "overlay"):
        if c in df.columns:
            df[c] = [
                "" if (not isinstance(p, str) or not p) else (p if Path(p).is_absolute() or base is None else str(base / p))
                for p in df[c].astype(object).where(df[c].notna(), "").astype(str)
            ]
    return df


def _level_tabs(d: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {lv: _labelled(level_table(d, lv)) for lv in LEVELS}


def _completeness(man: pd.DataFrame, ev: pd.DataFrame, *, split: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Which manifest images of ``split`` have no prediction (counts and the list)."""
    in_split = man[man["split"] == split]
    missing = in_split[~in_split["image_id"].isin(set(ev["image_id"]))]
    cols = [c for c in ("image_id", "patient_id", "study_id", "laterality", "view", "label", "path") if c in missing.columns]
    lab = pd.to_numeric(missing["label"], errors="coerce") if "label" in missing.columns else pd.Series(dtype=float)
    info = {
        "n_expected": int(len(in_split)),
        "n_predicted": int(len(in_split) - len(missing)),
        "n_missing": int(len(missing)),
        "n_missing_malignant": int((lab == 1).sum()),
        "complete": bool(missing.empty),
    }
    return info, missing[cols].reset_index(drop=True)


def _split_rows(joined: pd.DataFrame, split: str, src: str) -> pd.DataFrame:
    d = joined[joined["split"] == split]
    if d.empty:
        have = sorted({s for s in joined["split"].unique() if s})
        raise EvaluationError(f"{src}: no predicted image is in split {split!r} (predicted splits: {have or 'none'})")
    return d


def evaluate(
    predictions: str | Path | pd.DataFrame,
    manifest: str | Path | pd.DataFrame,
    out: str | Path,
    *,
    compare: str | Path | pd.DataFrame | None = None,
    reads: str | Path | pd.DataFrame | None = None,
    split: str = "test",
    val_split: str = "val",
    qc: Sequence[str | Path] | None = None,
    level: str = "image",
    run: str | Path | None = None,
    heatmap_kind: str | None = None,
    gallery_size: int = 4,
    seed: int = 0,
    title: str | None = None,
    svg: bool = True,
    on_step: Callable[[str], None] | None = None,
    score: str = "score",
    compare_score: str | None = None,
    require_complete: bool = False,
) -> EvaluationResult:
    """Evaluate predictions on one split and write results.json, tables/, figures/, report.html.

    Parameters
    ----------
    predictions
        Image-level predictions (``mammolens predict`` output or any table with
        ``image_id, score``); rows of other splits (e.g. ``val``) are used to choose the
        operating point.
    manifest
        The manifest with ``split`` and ``label`` (truth) and covariates.
    out
        Output folder.
    compare
        A second predictions table (e.g. the baseline) for the paired comparison.
    reads
        A reader-study table (``reader, case, modality, truth, score`` [+ ``heatmap_acceptable``]).
    split, val_split
        The evaluated split and the split on which the operating point is chosen.
    qc
        QC CSV files of ingest/preprocess; default: discovered beside the manifest.
    level
        Primary level (``image``, ``breast``, ``exam``) for subgroups, comparison figure,
        calibration and the headline.
    run
        Training run folder (``meta.json``, ``config.yaml``) for the model card.
    heatmap_kind
        Heatmap to evaluate (default: ``localization``, else ``attention``).
    gallery_size
        Examples per gallery row (TP, FN, FP).
    seed
        Seed of the ROC-band bootstrap.
    svg
        Also write every figure as SVG (vector, for papers).
    on_step
        Called with the name of each section as it starts (progress display).
    score
        Score column of ``predictions`` (default ``score``; external CSVs often call it
        ``malignant`` or ``prob``).
    compare_score
        Score column of ``compare`` (default: the same as ``score``).
    require_complete
        Refuse (raise :class:`EvaluationError`) when some manifest images of ``split`` have
        no prediction; by default they are left out with a warning in ``results.json``,
        the report and on the console.

    Returns
    -------
    EvaluationResult

    Notes
    -----
    Nothing is written for a refused input: the outputs are built in a temporary folder
    and moved into ``out`` only when the whole evaluation succeeded (``out/tables`` and
    ``out/figures`` are then replaced, so no stale figure of an earlier run remains).
    """
    import shutil
    import tempfile

    final_out = Path(out)
    if final_out.exists() and not final_out.is_dir():
        raise EvaluationError(f"{final_out}: output path exists and is not a folder")
    stage = Path(tempfile.mkdtemp(prefix="mammolens-evaluate-"))
    try:
        res = _evaluate_into(
            stage, predictions, manifest, compare=compare, reads=reads, split=split, val_split=val_split, qc=qc,
            level=level, run=run, heatmap_kind=heatmap_kind, gallery_size=gallery_size, seed=seed, title=title,
            svg=svg, on_step=on_step, score=score, compare_score=compare_score, require_complete=require_complete,
        )
        final_out.mkdir(parents=True, exist_ok=True)
        for name in ("tables", "figures"):
            if (final_out / name).is_dir():
                shutil.rmtree(final_out / name)
        for item in sorted(stage.iterdir()):
            target = final_out / item.name
            if target.is_file():
                target.unlink()
            shutil.move(str(item), str(target))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return EvaluationResult(
        out=final_out, results=res.results, results_path=final_out / res.results_path.name,
        report_path=final_out / res.report_path.name,
        tables=[final_out / p.relative_to(stage) for p in res.tables],
        figures=sorted((final_out / "figures").rglob("*.png")),
    )


def _evaluate_into(
    out: Path,
    predictions: str | Path | pd.DataFrame,
    manifest: str | Path | pd.DataFrame,
    *,
    compare: str | Path | pd.DataFrame | None,
    reads: str | Path | pd.DataFrame | None,
    split: str,
    val_split: str,
    qc: Sequence[str | Path] | None,
    level: str,
    run: str | Path | None,
    heatmap_kind: str | None,
    gallery_size: int,
    seed: int,
    title: str | None,
    svg: bool,
    on_step: Callable[[str], None] | None,
    score: str,
    compare_score: str | None,
    require_complete: bool,
) -> EvaluationResult:
    """The body of :func:`evaluate`, writing into the (empty, temporary) folder ``out``."""
    from mammolens.data.manifest import check_no_leakage, read_manifest, validate_manifest
    from mammolens.evaluate import figures as F
    from mammolens.evaluate.model_card import build_model_card
    from mammolens.evaluate.report import write_report

    if level not in LEVELS:
        raise EvaluationError(f"level must be one of {LEVELS}, got {level!r}")
    step = on_step or (lambda _s: None)
    t0 = time.time()
    tables_dir, figs_dir = out / "tables", out / "figures"
    tables_dir.mkdir(parents=True, exist_ok=True)
    figs_dir.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []

    step("reading inputs")
    man_path = None if isinstance(manifest, pd.DataFrame) else Path(manifest)
    man = validate_manifest(manifest, source="manifest") if man_path is None else read_manifest(man_path)
    check_no_leakage(man)
    base_dir = man_path.resolve().parent if man_path is not None else None
    preds, psrc = load_predictions(predictions, score=score)
    pred_dir = None if isinstance(predictions, pd.DataFrame) else Path(predictions).resolve().parent
    preds = _resolve_paths(preds, pred_dir)
    joined, info = join_predictions(preds, man, source=psrc)
    if info["n_unmatched_predictions"]:
        warnings.append(f"{info['n_unmatched_predictions']} prediction(s) have an image_id that is not in the manifest and were ignored")
    joined["age_band"] = _age_bands(joined["age"])
    model_name = _model_name(preds, "model")

    qc_paths = [Path(p) for p in qc] if qc else discover_qc_files(man_path)
    for p in qc_paths:
        if not p.exists():
            raise EvaluationError(f"{p}: QC file not found")
    qc_table, qc_used = _read_qc(qc_paths)

    ev = _split_rows(joined, split, psrc)
    n_in_split = int((man["split"] == split).sum())
    n_without_pred = n_in_split - len(ev)
    completeness, missing_tab = _completeness(man, ev, split=split)
    if n_without_pred:
        ex = missing_tab["image_id"].head(3).tolist()
        what = (f"{n_without_pred} of {n_in_split} image(s) of split {split!r} in the manifest have no prediction "
                f"({completeness['n_missing_malignant']} of them malignant; e.g. {ex})")
        if require_complete:
            raise EvaluationError(f"{psrc}: {what}; --require-complete refuses incomplete predictions")
        warnings.append(f"{what}: they are not analysed, and the results describe only the {len(ev)} predicted "
                        "image(s); the list is in tables/missing_predictions.csv")
    n_without_label = int(ev["label"].isna().sum())
    ev = ev[ev["label"].notna()]
    if ev.empty:
        raise EvaluationError(f"{psrc}: no image of split {split!r} has a ground-truth label")
    tabs = _level_tabs(ev)
    _check_two_classes(tabs[level], split=split, level=level, source=psrc)
    for lv in list(tabs):
        if tabs[lv]["label"].nunique() < 2:
            warnings.append(f"{lv} level skipped: split {split!r} has one class at that level")
            del tabs[lv]
    val = joined[(joined["split"] == val_split) & joined["label"].notna()]
    val_tabs = _level_tabs(val) if len(val) else None
    if val_tabs is None:
        warnings.append(f"no predictions for the {val_split!r} split: operating points were chosen on the evaluated split (optimistic)")

    results: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "title": title or f"Evaluation of {model_name} on the {split} split",
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mammolens_version": _version(),
        "primary_level": level,
        "split": split,
        "val_split": val_split,
        "model": model_name,
        "inputs": {
            "predictions": psrc,
            "manifest": str(man_path) if man_path else "<DataFrame>",
            "compare": None,
            "reads": None,
            "qc_files": qc_used,
            **info,
            "n_manifest_images_in_split_without_prediction": n_without_pred,
            "score_column": score,
        },
        "completeness": completeness,
    }
    tables: dict[str, pd.DataFrame] = {}
    fig_files: dict[str, Path] = {}
    if len(missing_tab):
        tables["missing_predictions"] = missing_tab

    step("cohort")
    cohort, ctabs = cohort_section(man, age_band_fn=_age_bands)
    n_an = {lv: int(len(t)) for lv, t in tabs.items()}
    cohort["flow"] = flow_section(man, qc_table, split=split, n_in_split=n_in_split, n_without_prediction=n_without_pred,
                                  n_without_label=n_without_label, n_analysed=n_an)
    cohort["analysed"] = n_an
    results["cohort"] = cohort
    tables.update(ctabs)
    tables["flow"] = pd.DataFrame([{**{k: v for k, v in f.items() if k != "reasons"},
                                    "reasons": "; ".join(f"{k}: {v}" for k, v in f["reasons"].items())} for f in cohort["flow"]])
    if len(qc_table):
        tables["qc_exclusions"] = qc_table.to_frame()

    step("performance")
    perf, ptabs, curves = performance_section(tabs, val_tabs, label=model_name, seed=seed)
    results["performance"] = perf
    tables.update(ptabs)
    for lv, c in curves.items():
        fig = F.roc_figure([c], title=f"ROC, {lv} level ({split} split, n={perf[lv]['n']}, {perf[lv]['n_pos']} malignant)")
        fig_files[f"roc_{lv}"] = F.save_figure(fig, figs_dir, f"roc_{lv}", svg=svg)[0]
    p0 = perf[level]
    t_img = tabs[level]
    fig = F.score_distribution_figure(t_img["score"].to_numpy(float), t_img["label"].to_numpy(int),
                                      p0["operating_point"]["threshold"], title=f"Score distribution ({level} level)")
    fig_files["scores"] = F.save_figure(fig, figs_dir, "scores", svg=svg)[0]

    results["comparison"] = None
    if compare is not None:
        step("comparison")
        cpreds, csrc = load_predictions(compare, what="comparison predictions", score=compare_score or score)
        cname = _model_name(cpreds, "baseline")
        if cname == model_name:
            cname = f"{cname} (compare)"
        cj, cinfo = join_predictions(cpreds, man, source=csrc)
        cj["age_band"] = _age_bands(cj["age"])
        cev = _split_rows(cj, split, csrc)
        cev = cev[cev["label"].notna()]
        ctabs_ = {lv: t for lv, t in _level_tabs(cev).items() if lv in tabs}
        cval = cj[(cj["split"] == val_split) & cj["label"].notna()]
        cval_tabs = _level_tabs(cval) if len(cval) else None
        cperf, _, ccurves = performance_section(ctabs_, cval_tabs, label=cname, seed=seed)
        ops_a = {lv: perf[lv]["operating_point"]["threshold"] for lv in tabs}
        ops_b = {lv: cperf[lv]["operating_point"]["threshold"] for lv in ctabs_}
        comp, comp_tabs = comparison_section(tabs, ctabs_, ops_a, ops_b)
        comp.update({"model": model_name, "baseline": cname, "baseline_performance": cperf})
        results["comparison"] = comp
        results["inputs"]["compare"] = csrc
        tables.update(comp_tabs)
        for lv in tabs:
            fig = F.roc_figure([curves[lv], ccurves[lv]], title=f"{model_name} vs {cname}, {lv} level "
                               f"(paired DeLong p = {comp['levels'][lv]['delong'].get('p_value', float('nan')):.3g})")
            fig_files[f"roc_compare_{lv}"] = F.save_figure(fig, figs_dir, f"roc_compare_{lv}", svg=svg)[0]

    step("subgroups")
    sub, sub_tab = subgroup_section(tabs[level])
    results["subgroups"] = {"level": level, **sub}
    for var, res_ in sub.items():
        het = res_.get("heterogeneity") or {}
        for c in het.get("corrected", []):
            warnings.append(f"subgroups by {var}: {c['group']} has AUC {c['auc']:.3f} with zero standard error; it is in "
                            f"Cochran's Q with a continuity correction (AUC {c['auc_used']:.4f}, SE {c['se_used']:.4f})")
        if het.get("excluded"):
            warnings.append(f"subgroups by {var}: not in Cochran's Q: "
                            + ", ".join(f"{e['group']} ({e['reason']}, n={e['n']})" for e in het["excluded"]))
    tables["subgroups"] = sub_tab
    if len(sub_tab):
        a = perf[level]["auc"]
        fig = F.forest_figure(sub_tab.to_dict("records"), overall=a, title=f"AUC by subgroup ({level} level, {split} split)")
        fig_files["forest"] = F.save_figure(fig, figs_dir, "forest", svg=svg)[0]

    results["reader_study"] = None
    if reads is not None:
        step("reader study")
        rd, rsrc = load_reads(reads)
        rs, rtabs, rcurves = reader_section(rd, tabs if set(LEVELS) <= set(tabs) else {**_level_tabs(ev)}, src=rsrc)
        results["reader_study"] = rs
        results["inputs"]["reads"] = rsrc
        tables.update(rtabs)
        fig = F.readers_roc_figure(rcurves["ai"], rcurves["readers"], title=f"Reader study ({rs['n_readers']} readers, {rs['n_cases']} {rs['case_level']} cases)")
        fig_files["readers_roc"] = F.save_figure(fig, figs_dir, "readers_roc", svg=svg)[0]

    step("interpretability")
    img = tabs.get("image", _labelled(level_table(ev, "image")))
    loc, loc_tab = localisation_section(img, kind=heatmap_kind, base_dir=base_dir)
    if len(loc_tab):
        tables["localisation"] = loc_tab
    thr_img = perf["image"]["operating_point"]["threshold"] if "image" in perf else p0["operating_point"]["threshold"]
    gallery = gallery_section(img, thr_img, n=gallery_size, kind=heatmap_kind, base_dir=base_dir, out_dir=figs_dir)
    results["interpretability"] = {
        "localisation": loc,
        "heatmap_acceptability": (results["reader_study"] or {}).get("heatmap_acceptability"),
        "gallery": {"threshold": thr_img, **gallery},
    }

    step("calibration")
    cal, cal_tab = calibration_section(t_img["label"].to_numpy(int), t_img["score"].to_numpy(float))
    cal["level"] = level
    results["calibration"] = cal
    tables["calibration"] = cal_tab
    fig = F.calibration_figure(cal["bins"], t_img["score"].to_numpy(float), title=f"Calibration ({level} level)")
    fig_files["calibration"] = F.save_figure(fig, figs_dir, "calibration", svg=svg)[0]

    step("model card")
    results["model_card"] = build_model_card(results, man, run=run)
    results["warnings"] = warnings

    step("writing")
    table_files = []
    for name, t in tables.items():
        p = tables_dir / f"{name}.csv"
        t.to_csv(p, index=False)
        table_files.append(p)
    results["files"] = {
        "results": "results.json",
        "report": "report.html",
        "model_card": "model_card.md",
        "tables": sorted(str(p.relative_to(out)) for p in table_files),
        "figures": sorted(str(p.relative_to(out)) for p in figs_dir.rglob("*") if p.is_file()),
    }
    results["elapsed_s"] = round(time.time() - t0, 2)
    results_path = out / "results.json"
    results_path.write_text(to_json(results) + "\n", encoding="utf-8")
    (out / "model_card.md").write_text(results["model_card"]["markdown"], encoding="utf-8")
    report_path = write_report(results, out, figures=fig_files, tables=tables)
    return EvaluationResult(out=out, results=json.loads(results_path.read_text()), results_path=results_path,
                            report_path=report_path, tables=table_files, figures=sorted(figs_dir.rglob("*.png")))


def _version() -> str:
    try:
        from mammolens import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"
