"""``mammolens ingest``: a dataset (DICOM folder or public dataset layout) -> manifest."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer

from mammolens.commands._common import (
    cli_errors,
    console,
    emit_json,
    exit_with,
    progress,
    report_qc,
)


def ingest(
    format: str = typer.Argument(..., metavar="FORMAT", help="Source format: dicom, mias, cbis-ddsm, vindr, rsna, inbreast, cmmd, embed, csv."),
    source: Path = typer.Argument(..., help="The dataset's folder (for csv: the table file)."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest to write (.csv or .parquet); QC table goes to <stem>_qc.csv beside it."),
    annotations: Path | None = typer.Option(None, "--annotations", "-a", help="dicom: CSV/xlsx of labels/lesions joined on sop_instance_uid, path, image_id, or per breast on patient_id + laterality [+ study_id]; cmmd: the clinical sheet (default: found in SOURCE)."),
    mapping: list[str] | None = typer.Option(None, "--map", "-m", help="csv: MANIFEST_COLUMN=CSV_COLUMN (repeatable)."),
    malignant_birads: str | None = typer.Option(None, "--malignant-birads", help="vindr/inbreast: BI-RADS categories counted as the malignant proxy, e.g. '4,5' or '4c,5,6'."),
    table: str | None = typer.Option(None, "--table", help="rsna: the table inside SOURCE (default train.csv)."),
    images_dir: str | None = typer.Option(None, "--images-dir", help="rsna: the image folder inside SOURCE (default train_images)."),
    read_headers: bool | None = typer.Option(None, "--read-headers/--no-read-headers", help="rsna/vindr/cbis-ddsm/inbreast/embed: read each DICOM header (manufacturer, size; default) or only check the file exists."),
    workers: int | None = typer.Option(None, "--workers", "-j", min=1, help="dicom/cmmd: threads reading DICOM headers (helps on network storage)."),
    no_check_files: bool = typer.Option(False, "--no-check-files", help="csv: do not check that image files exist."),
    relative_paths: bool = typer.Option(False, "--relative-paths", help="Write image paths relative to the manifest's folder (default absolute)."),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON to stdout."),
) -> None:
    """Turn a dataset into a manifest (one row per image) and a QC table.

    Bad inputs (corrupt or missing files, malformed lines) are listed in the QC table
    and do not stop the others; exit status 3 when anything was rejected.

    Examples:

        mammolens ingest mias shared/datasets/mini-mias -o data/mias.csv

        mammolens ingest dicom synth/dicom --annotations synth/annotations.csv -o data/manifest.csv

        mammolens ingest cmmd /data/manifest-1616439774456 -o data/cmmd.csv

        mammolens ingest csv table.csv --map path=File --map patient_id=Patient -o data/m.parquet
    """
    from mammolens.data.adapters import get_adapter
    from mammolens.data.ingest import ingest as run_ingest
    from mammolens.errors import EXIT_USAGE, ConfigError

    given: dict[str, Any] = {
        "annotations": annotations,
        "mapping": list(mapping) if mapping else None,
        "malignant_birads": malignant_birads,
        "table": table,
        "images_dir": images_dir,
        "read_headers": read_headers,
        "check_files": False if no_check_files else None,
        "workers": workers,
    }
    options = {k: v for k, v in given.items() if v is not None}
    try:
        adapter = get_adapter(format)
        unknown = [k for k in options if k not in adapter.options]
        if unknown:
            names = {"mapping": "--map", "check_files": "--no-check-files"}
            flags = ", ".join(names.get(k, "--" + k.replace("_", "-")) for k in unknown)
            raise ConfigError(f"{flags} do(es) not apply to format {adapter.name!r}")
    except ConfigError as e:
        console.print(f"[bold red]usage error:[/] {e}")
        raise typer.Exit(EXIT_USAGE) from None

    with cli_errors():
        with progress(transient=True) as bar:

            def track(items: Iterable[Any], total: int | None = None, description: str = "") -> Iterable[Any]:
                task = bar.add_task(description or "ingest", total=total)
                for it in items:
                    yield it
                    bar.advance(task)

            try:
                result = run_ingest(adapter.name, source, out, track=track, relative_paths=relative_paths, **options)
            except ConfigError as e:
                console.print(f"[bold red]usage error:[/] {e}")
                raise typer.Exit(EXIT_USAGE) from None
    summary = result.summary()
    if json_out:
        emit_json(summary)
    else:
        _print_summary(summary)
    status = report_qc(result.qc, result.qc_path, what="input(s)")
    if len(result.manifest) == 0:
        from mammolens.errors import EXIT_ERROR

        console.print(f"[bold red]error:[/] no image could be ingested from {source}; see the QC table {result.qc_path}")
        raise typer.Exit(EXIT_ERROR)
    exit_with(status)


def _print_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"ingest {s['format']}", caption=str(s["source"]), show_header=True, header_style="bold")
    t.add_column("count")
    t.add_column("n", justify="right")
    for key in ("images", "patients", "exams", "breasts", "malignant", "benign", "normal", "label_unknown", "with_lesions", "positive_breasts", "positive_exams", "rejected", "flagged"):
        t.add_row(key.replace("_", " "), str(s[key]))
    for reason, n in s["rejected_by_reason"].items():
        t.add_row(f"  rejected: {reason}", str(n))
    console.print(t)
    console.print(f"manifest: {s['manifest']}\nQC table: {s['qc_table']}")
