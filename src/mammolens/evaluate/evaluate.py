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

The package: :mod:`.inputs` (loading, joining, level tables), :mod:`.sections` (one module
per report section), :mod:`._common` (constants, errors, stats-to-JSON adapters),
:mod:`.figures`, :mod:`.report`, :mod:`.model_card`; this module is the pipeline.

All numbers land in ``results.json`` (keys documented in docs/evaluate.md), every table
in ``tables/*.csv``, every figure in ``figures/*.png|svg``, and all of it in a
self-contained ``report.html``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.evaluate._common import (
    LEVELS,
    RESULTS_SCHEMA_VERSION,
    EvaluationError,
    EvaluationResult,
    _age_bands,
    _version,
)
from mammolens.evaluate.inputs import (
    _labelled,
    _level_tabs,
    _model_name,
    _split_rows,
    join_predictions,
    level_table,
    load_inputs,
    load_predictions,
    load_reads,
)
from mammolens.evaluate.sections.calibration import calibration_section
from mammolens.evaluate.sections.cohort import cohort_section, flow_section
from mammolens.evaluate.sections.interpretability import gallery_section, localisation_section
from mammolens.evaluate.sections.performance import (
    benign_section,
    comparison_section,
    performance_section,
)
from mammolens.evaluate.sections.readers import reader_section
from mammolens.evaluate.sections.subgroups import subgroup_section
from mammolens.jsonio import to_json


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
    inp = load_inputs(predictions, manifest, qc=qc, split=split, val_split=val_split, level=level, score=score,
                      require_complete=require_complete)
    warnings.extend(inp.warnings)
    man, man_path, base_dir, psrc, info = inp.manifest, inp.manifest_path, inp.base_dir, inp.source, inp.info
    model_name, qc_table, qc_used, ev, tabs, val_tabs = inp.model_name, inp.qc_table, inp.qc_used, inp.ev, inp.tabs, inp.val_tabs
    n_in_split, n_without_pred, n_without_label = inp.n_in_split, inp.n_without_prediction, inp.n_without_label
    completeness, missing_tab = inp.completeness, inp.missing

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
    # secondary: the benign output's benign-vs-normal AUC (None without benign_score)
    results["performance_benign"] = benign_section(ev)
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
