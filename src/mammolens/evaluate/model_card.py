"""A model card (Mitchell et al. 2019, "Model Cards for Model Reporting", FAT* '19) built from
the evaluation's own numbers, the manifest's training split and, when given, the run folder.

Every statement about data and performance is computed; only the intended-use text is fixed
(it states how this kind of model may be used, whatever the numbers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

INTENDED_USE = (
    "A second reader or triage aid for screening mammography: it scores each image, breast "
    "and exam for the probability of malignancy and shows where it looked (heatmaps). A "
    "radiologist reads every exam and makes every decision; the score may reorder a worklist "
    "or prompt a second look. It is not a diagnostic device, not for use without a "
    "radiologist, and not for symptomatic, diagnostic or follow-up imaging."
)

GENERAL_LIMITATIONS = [
    "Validated only on the data described here; performance on other vendors, sites, "
    "populations and screening programmes must be measured before use.",
    "Scores are calibrated to the training prevalence, not to a screening population's; "
    "re-choose the operating point on local validation data.",
    "Heatmaps show where the model's evidence lies; they are not lesion segmentations.",
    "Biopsy-proven labels miss interval cancers and cancers detected at later rounds.",
]


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _run_meta(run: str | Path | None) -> dict[str, Any]:
    if run is None:
        return {}
    run = Path(run)
    if run.is_file():
        run = run.parent.parent if run.parent.name == "checkpoints" else run.parent
    meta: dict[str, Any] = {"run": str(run)}
    mp = run / "meta.json"
    if mp.exists():
        try:
            meta["meta"] = json.loads(mp.read_text())
        except json.JSONDecodeError:
            meta["meta_error"] = f"{mp}: not valid JSON"
    cp = run / "config.yaml"
    if cp.exists():
        try:
            import yaml

            meta["config"] = yaml.safe_load(cp.read_text())
        except Exception as e:  # noqa: BLE001 - a bad config must not stop the report
            meta["config_error"] = f"{cp}: {e}"
    return meta


def build_model_card(results: dict[str, Any], manifest: pd.DataFrame, *, run: str | Path | None = None) -> dict[str, Any]:
    """Assemble the model card (dict with a ``markdown`` rendering) from computed results."""
    cohort = results.get("cohort", {}).get("by_split", {})
    train = cohort.get("train", {})
    val = cohort.get("val", {})
    man_train = manifest[manifest["split"] == "train"]
    datasets = sorted({d for d in manifest.get("dataset", pd.Series(dtype=str)).astype(str) if d})
    vendors_train = sorted({v for v in man_train["manufacturer"].astype(str) if v})
    vendors_eval = sorted({v for v in manifest.loc[manifest["split"] == results.get("split"), "manufacturer"].astype(str) if v})
    level = results.get("primary_level", "image")
    perf = results.get("performance", {})
    p = perf.get(level, {})
    auc = p.get("auc", {})
    m = p.get("metrics", {})

    caveats: list[str] = []
    overall = auc.get("auc")
    for var, res in (results.get("subgroups") or {}).items():
        if not isinstance(res, dict) or "groups" not in res:
            continue
        for g in res["groups"]:
            name = g.get("group", g.get("value"))
            n, npos = g.get("n") or 0, g.get("n_pos") or 0
            a, hi = g.get("auc"), g.get("ci_high")
            if a is None or (isinstance(a, float) and a != a):
                caveats.append(f"{var} = {name}: AUC not estimable (n={n}, {npos} malignant).")
            elif npos < 10 or (n - npos) < 10:
                caveats.append(f"{var} = {name}: few cases (n={n}, {npos} malignant), AUC {a:.3f} is imprecise.")
            elif overall is not None and hi is not None and hi < overall:
                caveats.append(f"{var} = {name}: AUC {a:.3f} (CI upper {hi:.3f}) is below the overall AUC {overall:.3f}.")
        het = res.get("heterogeneity") or {}
        hp = het.get("p")
        if hp is not None and hp == hp and hp < 0.05:
            caveats.append(f"AUC differs across {var} (Cochran's Q heterogeneity p = {hp:.3g}).")
    unseen = sorted(set(vendors_eval) - set(vendors_train))
    if unseen:
        caveats.append(f"Evaluated on vendor(s) absent from training: {', '.join(unseen)}.")
    if any(d.lower().startswith("synth") for d in datasets):
        caveats.append("Trained and evaluated on SYNTHETIC phantoms: these numbers say nothing about clinical performance.")

    run_meta = _run_meta(run)
    model_name = results.get("model", "model")
    card: dict[str, Any] = {
        "model": model_name,
        "run": run_meta,
        "intended_use": INTENDED_USE,
        "training_data": {
            "datasets": datasets,
            "train": train,
            "val": val,
            "manufacturers": vendors_train,
            "density": {k: int(v) for k, v in man_train["density"].replace("", "unknown").value_counts().items()},
            "age": {"median": float(man_train["age"].median()) if man_train["age"].notna().any() else None,
                    "min": float(man_train["age"].min()) if man_train["age"].notna().any() else None,
                    "max": float(man_train["age"].max()) if man_train["age"].notna().any() else None},
        },
        "evaluation": {
            "split": results.get("split"),
            "level": level,
            "auc": auc,
            "sensitivity": m.get("sensitivity"),
            "specificity": m.get("specificity"),
            "threshold": (p.get("operating_point") or {}).get("threshold"),
            "threshold_chosen_on": (p.get("operating_point") or {}).get("chosen_on"),
        },
        "limitations": GENERAL_LIMITATIONS,
        "subgroup_caveats": caveats,
    }
    card["markdown"] = _markdown(card)
    return card


def _markdown(card: dict[str, Any]) -> str:
    td, ev = card["training_data"], card["evaluation"]
    auc = ev.get("auc") or {}
    lines = [
        f"# Model card: {card['model']}",
        "",
        "## Intended use",
        card["intended_use"],
        "",
        "## Training data",
        f"- Datasets: {', '.join(td['datasets']) or 'not recorded'}",
        f"- Training split: {td['train'].get('patients', 0)} patients, {td['train'].get('exams', 0)} exams, "
        f"{td['train'].get('images', 0)} images ({td['train'].get('malignant_images', 0)} malignant images)",
        f"- Validation split: {td['val'].get('patients', 0)} patients, {td['val'].get('images', 0)} images",
        f"- Manufacturers: {', '.join(td['manufacturers']) or 'unknown'}",
        f"- Density: {', '.join(f'{k}: {v}' for k, v in td['density'].items()) or 'unknown'}",
        f"- Age: median {td['age']['median']}, range {td['age']['min']}-{td['age']['max']}",
        "",
        "## Performance",
        f"- {ev['level']}-level AUC on the {ev['split']} split: {_fmt(auc.get('auc'))} "
        f"(95% CI {_fmt(auc.get('ci_low'))}-{_fmt(auc.get('ci_high'))}, DeLong)",
    ]
    for k in ("sensitivity", "specificity"):
        v = ev.get(k) or {}
        lines.append(f"- {k.capitalize()} at threshold {_fmt(ev.get('threshold'))} (chosen on {ev.get('threshold_chosen_on')}): "
                     f"{_fmt(v.get('estimate'))} (95% CI {_fmt(v.get('ci_low'))}-{_fmt(v.get('ci_high'))})")
    lines += ["", "## Limitations", *[f"- {x}" for x in card["limitations"]], "", "## Subgroup caveats"]
    lines += [f"- {x}" for x in card["subgroup_caveats"]] or ["- None found by the checks run (few cases, CI below overall, heterogeneity, unseen vendors)."]
    return "\n".join(lines) + "\n"
