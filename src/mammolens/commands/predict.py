"""``mammolens predict``: a trained run + images -> predictions tables, heatmaps, overlays."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import cli_errors, console, emit_json, exit_with, report_qc


def predict(
    run: Path = typer.Argument(..., help="Run folder (uses checkpoints/best.ckpt) or a .ckpt file."),
    inputs: list[Path] = typer.Argument(..., help="Manifests (.csv/.parquet), DICOM/PNG/PGM/TIFF files or folders."),
    out: Path = typer.Option(..., "--out", "-o", help="PREDICTIONS.csv (also writes PREDICTIONS_breast.csv, PREDICTIONS_exam.csv, qc.csv)."),
    heatmaps: Path | None = typer.Option(None, "--heatmaps", help="Folder for <image>.npz heatmaps and <image>.png overlays."),
    cache: Path | None = typer.Option(None, "--cache", "-c", help="Cache holding a manifest's images (else preprocess on the fly)."),
    split: str | None = typer.Option(None, "--split", help="Only this split of manifest inputs (e.g. test)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    no_gradcam: bool = typer.Option(False, "--no-gradcam", help="Skip Grad-CAM maps (faster)."),
    json_out: bool = typer.Option(False, "--json", help="Print a summary as JSON to stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score images with a trained model: image, breast (max over views) and exam (max over breasts) scores.

    Bad images are listed in qc.csv beside the output and the rest are scored (exit
    status 3 when any was rejected). Interrupted runs resume from PREDICTIONS.partial.csv.

    Example:

        mammolens predict runs/attention data/manifest.csv --cache cache/ --split test --out preds/test.csv --heatmaps preds/heatmaps
    """
    from mammolens.predict.api import predict as run_predict

    with cli_errors():
        df = run_predict(
            run,
            list(inputs),
            out,
            heatmaps_dir=heatmaps,
            batch_size=batch_size,
            device=device,
            split=split,
            cache=cache,
            gradcam=False if no_gradcam else None,
            progress=not quiet and not json_out,
        )
    qc = df.attrs["qc"]
    out_csv = df.attrs["breast_path"].replace("_breast.csv", ".csv")
    if json_out:
        emit_json(
            {
                "predictions": out_csv,
                "breast": df.attrs["breast_path"],
                "exam": df.attrs["exam_path"],
                "qc": df.attrs["qc_path"],
                "model": df.attrs["model"],
                "checkpoint": df.attrs["checkpoint"],
                "n_images": int(len(df)),
                "n_rejected": int(df.attrs["n_rejected"]),
                "heatmaps": str(heatmaps) if heatmaps else None,
            }
        )
    else:
        console.print(f"predict: {len(df)} image(s) scored with {df.attrs['model']} -> {out_csv}")
    exit_with(report_qc(qc, Path(df.attrs["qc_path"]), what="input(s)"))
