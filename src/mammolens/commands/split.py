"""``mammolens split``: patient-level, stratified train/val/test splits or k folds."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import cli_errors, console, emit_json


def split(
    manifest: Path = typer.Argument(..., help="Manifest (CSV or Parquet) to split."),
    val: float | None = typer.Option(None, "--val", help="Fraction of patients for validation [default: 0.15; not with --folds]."),
    test: float | None = typer.Option(None, "--test", help="Fraction of patients for test [default: 0.15; with --folds: 0, else a held-out test set]."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same manifest + seed = same split)."),
    stratify_by: list[str] | None = typer.Option(None, "--stratify-by", help="Also stratify by this column (patient's most common value), e.g. manufacturer or site. Repeatable."),
    folds: int | None = typer.Option(None, "--folds", min=2, help="Instead of train/val/test, add a `fold` column (0..K-1) by patient for K-fold cross-validation."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here (default: overwrite MANIFEST)."),
    json_out: bool = typer.Option(False, "--json", help="Print per-split counts as JSON to stdout."),
) -> None:
    """Assign every patient (all her images) to train / val / test, stratified by label.

    A patient is positive if any of her images is. Stratification by label (and by the
    --stratify-by columns) keeps the share of positives similar in every split; the
    result is checked for patient leakage. With --folds K the `split` column is left
    as it is and a `fold` column is added instead; --folds K --test F first holds out a
    test set (split=test) and deals the other patients (split=train) into the folds.

    Examples:

        mammolens split data/manifest.csv --val 0.15 --test 0.15 --seed 42

        mammolens split data/manifest.csv --stratify-by manufacturer -o data/split.csv

        mammolens split data/mias.csv --folds 5 --seed 0

        mammolens split data/manifest.csv --folds 5 --test 0.2
    """
    from mammolens.data.manifest import read_manifest, write_manifest
    from mammolens.data.split import (
        kfold_manifest,
        single_class_splits,
        split_manifest,
        split_summary,
    )
    from mammolens.errors import EXIT_USAGE, ConfigError

    extra = tuple(stratify_by or ())
    with cli_errors():
        df = read_manifest(manifest, resolve_paths=False)
        try:
            if folds is not None:
                if val is not None:
                    raise ConfigError("--val does not apply with --folds (each fold is the validation set of the others)")
                res = kfold_manifest(df, k=folds, seed=seed, extra_strata=extra, test=test or 0.0)
                column = "fold"
            else:
                val = 0.15 if val is None else val
                test = 0.15 if test is None else test
                res = split_manifest(df, val=val, test=test, seed=seed, extra_strata=extra)
                column = "split"
        except ConfigError as e:
            console.print(f"[bold red]usage error:[/] {e}")
            raise typer.Exit(EXIT_USAGE) from None
        target = out or manifest
        write_manifest(res, target)
    summary = split_summary(res, column=column)
    warn = single_class_splits(summary, column=column)
    if json_out:
        emit_json(
            {
                "manifest": str(target),
                "column": column,
                "seed": seed,
                "val": val,
                "test": test,
                "folds": folds,
                "stratify": ["label", *extra],
                "splits": summary.to_dict("records"),
                "single_class": warn,
            }
        )
    else:
        from rich.table import Table

        t = Table(title=f"{column}s of {target}", header_style="bold")
        for c in summary.columns:
            t.add_column(c.replace("_", " "), justify="right")
        for r in summary.itertuples(index=False):
            t.add_row(*(str(v) for v in r))
        console.print(t)
        if column == "fold" and (res["split"] == "test").any():
            held = res[res["split"] == "test"]
            console.print(f"held-out test: {held['patient_id'].nunique()} patients, {len(held)} images (split=test, no fold)")
    for s in warn:
        console.print(f"[yellow]warning:[/] {column} {s!r} has a single class (no positives or no negatives); its AUC is undefined")
