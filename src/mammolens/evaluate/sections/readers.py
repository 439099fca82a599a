"""Report section: the reader study (per-reader AUCs, MRMC, AI vs readers, heatmap acceptability)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mammolens.errors import MammolensError
from mammolens.evaluate._common import EvaluationError, _d, _proportion
from mammolens.evaluate.inputs import _match_cases


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
