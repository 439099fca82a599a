"""Report sections: performance at each level (AUC, ROC, operating point, thresholds) and
the model-vs-baseline comparison (paired DeLong, McNemar).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mammolens.evaluate._common import (
    EvaluationError,
    _auc,
    _binary_metrics,
    _d,
    _mcnemar,
    _metric_value,
    _operating_point,
    _roc,
    _roc_band,
    _threshold_table,
)


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


def benign_section(image_tab: pd.DataFrame) -> dict[str, Any] | None:
    """The benign output's AUC, benign vs normal, as a secondary figure (or ``None``).

    Only for predictions with a ``benign_score`` column (a run with ``model.benign_output``)
    on a manifest that says which images hold a benign finding
    (:func:`mammolens.data.manifest.benign_labels`). Malignant images and breasts are left
    out: the question is whether the benign output tells benign findings from normal
    tissue. Every other figure of the report uses the malignant ``score``.
    """
    from mammolens.data.manifest import benign_labels
    from mammolens.stats.levels import aggregate_scores

    if "benign_score" not in image_tab.columns:
        return None
    d = image_tab.assign(_benign=benign_labels(image_tab).astype("Float64").astype(float),
                         benign_score=pd.to_numeric(image_tab["benign_score"], errors="coerce"))
    d = d[d["_benign"].notna() & d["benign_score"].notna()]
    out: dict[str, Any] = {"truth": "benign finding (outcome 'benign' or a benign lesion) vs none, among non-malignant "
                           "images / breasts", "score": "benign_score", "levels": {}}
    for level in ("image", "breast"):
        # a breast: max of its images' benign scores and truths; malignant when any image is
        t = d if level == "image" else aggregate_scores(d.assign(label=d["label"].astype(float)), level="breast",
                                                        score=["benign_score", "label"], truth="_benign", missing_keys="group")
        t = t[t["label"] == 0]
        y = t["_benign"].to_numpy(float).astype(int)
        if len(t) == 0 or len(np.unique(y)) < 2:
            continue
        out["levels"][level] = {"n": int(len(y)), "n_benign": int(y.sum()), "n_normal": int((1 - y).sum()),
                                "auc": _auc(y, t["benign_score"].to_numpy(float), t["patient_id"].to_numpy())}
    return out if out["levels"] else None


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
