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
    backend: str = typer.Option("eager", "--backend", help="eager (PyTorch), compiled (torch.compile), onnx (ONNX Runtime) or openvino; a missing one falls back to eager with the reason."),
    workers: int = typer.Option(1, "--workers", "-w", min=0, help="Processes decoding image files beside the model (crash-safe; 0: in this process)."),
    no_gradcam: bool = typer.Option(False, "--no-gradcam", help="Skip Grad-CAM maps (faster)."),
    top_k: int = typer.Option(3, "--top-k", min=0, help="With heatmaps: the K highest-scoring regions per image -> PREDICTIONS_regions.csv."),
    dicom_out: Path | None = typer.Option(
        None, "--dicom-out", help="Per study, the DICOM objects the service sends to PACS (TID 1500 SR, heatmap overlays, Segmentations) -> DIR/<StudyInstanceUID>/."
    ),
    stow: str | None = typer.Option(None, "--stow", help="DICOMweb URL: also store the --dicom-out objects there (STOW-RS)."),
    operating_point: float = typer.Option(0.5, "--operating-point", min=0.0, max=1.0, help="Score at or above which the SR asserts a finding (as mammolens serve)."),
    json_out: bool = typer.Option(False, "--json", help="Print a summary as JSON to stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score images with a trained model: image, breast (max over views) and exam (max over breasts) scores.

    Bad images are listed in qc.csv beside the output and the rest are scored (exit
    status 3 when any was rejected). Interrupted runs resume from PREDICTIONS.partial.csv.

    Example:

        mammolens predict runs/attention data/manifest.csv --cache cache/ --split test --out preds/test.csv --heatmaps preds/heatmaps

        mammolens predict runs/attention incoming/ --out preds/new.csv --dicom-out preds/dicom --stow http://pacs:8042/dicom-web
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
            backend=backend,
            workers=workers,
            progress=not quiet and not json_out,
            top_k=top_k,
            dicom_out=dicom_out,
            stow=stow,
            operating_point=operating_point,
        )
    qc = df.attrs["qc"]
    out_csv = df.attrs["breast_path"].replace("_breast.csv", ".csv")
    if json_out:
        emit_json(
            {
                "predictions": out_csv,
                "breast": df.attrs["breast_path"],
                "exam": df.attrs["exam_path"],
                "exam_gmic": df.attrs["gmic_path"],
                "qc": df.attrs["qc_path"],
                "model": df.attrs["model"],
                "checkpoint": df.attrs["checkpoint"],
                "n_images": int(len(df)),
                "n_rejected": int(df.attrs["n_rejected"]),
                "heatmaps": str(heatmaps) if heatmaps else None,
                "regions": df.attrs["regions_path"],
                "dicom": df.attrs["dicom"],
            }
        )
    else:
        console.print(f"predict: {len(df)} image(s) scored with {df.attrs['model']} -> {out_csv}")
        if df.attrs["gmic_path"]:
            console.print(f"predict: benign and malignant per breast (GMIC layout) -> {df.attrs['gmic_path']}")
        if df.attrs["regions_path"]:
            console.print(f"predict: top-{top_k} regions per image -> {df.attrs['regions_path']}")
        d = df.attrs["dicom"]
        if d is not None:
            stored = f", {d['stored']} stored to {d['stow']}" if d["stow"] else ""
            console.print(f"predict: DICOM results of {d['studies']} study(ies): {d['sr']} SR, {d['sc']} overlay(s), {d['seg']} segmentation(s) -> {d['dir']}{stored}")
    exit_with(report_qc(qc, Path(df.attrs["qc_path"]), what="input(s)"))
