"""``mammolens preprocess``: manifest -> cache of cropped, flipped, resized images (+ masks)."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import (
    cli_errors,
    console,
    emit_json,
    exit_with,
    report_qc,
)
from mammolens.progress import callback_bar


def preprocess(
    manifest: Path = typer.Argument(..., help="Manifest (CSV or Parquet) written by `mammolens ingest`."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder (created; an existing one is resumed)."),
    size: str = typer.Option("1024x512", "--size", help="Cache image size HxW (height x width)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Worker processes (use the number of cores)."),
    dtype: str = typer.Option("uint16", "--dtype", help="Storage type of cached images: uint16 or float16."),
    window: str = typer.Option("auto", "--window", help="DICOM window: 'auto' (VOI LUT / first window) or a 0-based window index N."),
    threshold: str = typer.Option("otsu", "--threshold", help="Breast segmentation threshold: otsu, triangle, or a value in (0, 1)."),
    margin: float = typer.Option(0.01, "--margin", help="Margin around the breast, as a fraction of the image's long side."),
    flip_to: str = typer.Option("left", "--flip-to", help="Side the chest wall is put on: left, right or none."),
    no_crop: bool = typer.Option(False, "--no-crop", help="Keep the whole image (no breast crop)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON to stdout."),
) -> None:
    """Decode, crop to the breast, flip (chest wall left), resize and cache every image.

    Resumable: run the same command again after an interruption and finished images are skipped; changing a setting reprocesses. Rejected inputs are listed in CACHE/qc.csv (exit status 3).

    Example:

        mammolens preprocess data/manifest.csv --out cache/ --size 1024x512 --workers 8
    """
    from pydantic import ValidationError

    from mammolens.data.manifest import read_manifest
    from mammolens.data.preprocess import preprocess_manifest
    from mammolens.data.preprocess_settings import PreprocessSettings, parse_size
    from mammolens.errors import EXIT_USAGE

    try:
        thr: str | float = threshold if threshold in ("otsu", "triangle") else float(threshold)
        settings = PreprocessSettings(
            size=parse_size(size),
            dtype=dtype,  # type: ignore[arg-type]
            window=window,  # type: ignore[arg-type]
            threshold=thr,
            margin=margin,
            flip_to=flip_to,  # type: ignore[arg-type]
            crop=not no_crop,
        )
    except (ValueError, ValidationError) as e:
        msg = "; ".join(f"{'.'.join(map(str, er['loc']))}: {er['msg']}" for er in e.errors()) if isinstance(e, ValidationError) else str(e)
        console.print(f"[bold red]usage error:[/] {msg}")
        raise typer.Exit(EXIT_USAGE) from None

    with cli_errors():
        df = read_manifest(manifest)
        with callback_bar("preprocess", total=len(df)) as step:
            result = preprocess_manifest(
                df, out, settings, workers=workers, progress=step, base_dir=Path(manifest).resolve().parent
            )
    summary = result.to_dict()
    if json_out:
        emit_json(summary)
    else:
        console.print(
            f"preprocess: {result.total} image(s): [green]{result.processed} processed[/], "
            f"{result.skipped} already cached (skipped), "
            f"[{'red' if result.rejected else 'green'}]{result.rejected} rejected[/] "
            f"in {result.seconds:.1f} s -> {result.cache_dir} (settings {summary['settings_key']})"
        )
    status = report_qc(result.qc, result.qc_path, what="image(s)")
    if not json_out and not result.rejected:
        console.print(f"QC table: {result.qc_path}")
    exit_with(status)
