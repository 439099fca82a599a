"""``mammolens evaluate``: predictions + manifest -> results.json, tables, figures, report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import cli_errors, console, emit_json


def evaluate(
    predictions: Path = typer.Argument(..., help="Image-level predictions CSV/Parquet (`mammolens predict` output, or any table with image_id, score)."),
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Manifest with split, label (truth) and covariates."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (results.json, tables/, figures/, report.html)."),
    compare: Path | None = typer.Option(None, "--compare", help="A second predictions table (e.g. the baseline) for the paired comparison."),
    reads: Path | None = typer.Option(None, "--reads", help="Reader-study CSV: reader, case, modality (unaided|aided), truth, score [, heatmap_acceptable]."),
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    val_split: str = typer.Option("val", "--val-split", help="Split on which the operating point is chosen (Youden)."),
    qc: list[Path] | None = typer.Option(None, "--qc", help="QC CSV of ingest/preprocess (repeatable; default: qc CSVs found beside the manifest)."),
    level: str = typer.Option("image", "--level", help="Primary level for subgroups, calibration and the headline: image, breast or exam."),
    run: Path | None = typer.Option(None, "--run", help="Training run folder (meta.json, config.yaml) for the model card."),
    heatmap_kind: str | None = typer.Option(None, "--heatmap-kind", help="Heatmap to score: localization (default when present), attention or gradcam."),
    gallery: int = typer.Option(4, "--gallery", min=0, help="Examples per gallery row (true positives, false negatives, false positives)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the ROC-band bootstrap."),
    score: str = typer.Option("score", "--score", help="Score column of PREDICTIONS (external CSVs often call it malignant or prob)."),
    compare_score: str | None = typer.Option(None, "--compare-score", help="Score column of --compare (default: the --score column)."),
    require_complete: bool = typer.Option(False, "--require-complete", help="Exit with an error when some images of the split have no prediction (default: evaluate the predicted ones and warn)."),
    json_out: bool = typer.Option(False, "--json", help="Print the headline numbers as JSON to stdout."),
) -> None:
    """Evaluate predictions: AUC with DeLong CIs, operating point, subgroups, comparison, reader study, report.

    The operating point is chosen on the validation split (--val-split) and applied to the
    evaluated split. Writes OUT/results.json, OUT/tables/*.csv, OUT/figures/*.png|svg,
    OUT/model_card.md and a self-contained OUT/report.html. Manifest images of the split
    without a prediction are left out with a warning (an error with --require-complete);
    nothing is written when an input is refused.

    Example:

        mammolens evaluate preds/attention.csv --manifest data/manifest.csv --out eval/ --compare preds/baseline.csv --reads reads.csv

        mammolens evaluate their_model.csv --score malignant --require-complete --manifest data/manifest.csv --out eval_theirs/
    """
    from mammolens.errors import EXIT_USAGE

    if level not in ("image", "breast", "exam"):
        console.print(f"[bold red]usage error:[/] --level must be image, breast or exam, got {level!r}")
        raise typer.Exit(EXIT_USAGE)
    with cli_errors():
        from mammolens.evaluate import evaluate as run_evaluate

        with console.status("evaluate") as status:
            res = run_evaluate(
                predictions, manifest, out, compare=compare, reads=reads, split=split, val_split=val_split,
                qc=qc or None, level=level, run=run, heatmap_kind=heatmap_kind, gallery_size=gallery, seed=seed,
                on_step=lambda s: status.update(f"evaluate: {s}"),
                score=score, compare_score=compare_score, require_complete=require_complete,
            )
    for w in res.results.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    head = res.headline()
    if json_out:
        emit_json(head)
        return
    print_headline(head)


def print_headline(head: dict) -> None:
    """Print the headline numbers (AUCs with CIs, sensitivity/specificity) to stderr."""

    def ci(d: dict | None, pct: bool = False) -> str:
        if not d:
            return "n/a"
        est = d.get("auc", d.get("value", d.get("estimate")))
        if est is None:
            return "n/a"
        f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
        lo, hi = d.get("ci_low"), d.get("ci_high")
        return f(est) if lo is None or hi is None else f"{f(est)} (95% CI {f(lo)}-{f(hi)})"

    for lv in ("image", "breast", "exam"):
        if f"auc_{lv}" in head:
            console.print(f"AUC {lv:6s} {ci(head[f'auc_{lv}'])}")
    if "sensitivity" in head:
        console.print(f"at threshold {head.get('threshold', float('nan')):.3f} (chosen on {head.get('threshold_chosen_on')}), "
                      f"{head['level']} level: sensitivity {ci(head['sensitivity'], True)}, "
                      f"specificity {ci(head['specificity'], True)}")
    if head.get("delong_p_vs_baseline") is not None:
        console.print(f"vs baseline: paired DeLong p = {head['delong_p_vs_baseline']:.3g}")
    if head.get("benign_auc_image"):
        console.print(f"benign output (secondary), benign vs normal images: AUC {ci(head['benign_auc_image'])}")
    if head.get("reader_auc_unaided"):
        console.print(f"readers: AUC unaided {ci(head['reader_auc_unaided'])}, aided {ci(head.get('reader_auc_aided'))}")
    console.print(f"report: {head['report']}")
