"""Report section: the cohort (counts by outcome, vendor, density, age) and the inclusion flow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from mammolens.qc import QCTable


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
