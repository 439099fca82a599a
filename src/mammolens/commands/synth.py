"""``mammolens synth``: write the built-in synthetic screening cohort (DICOM + annotations + manifest)."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import cli_errors, console, emit_json
from mammolens.progress import callback_bar


def synth(
    out: Path = typer.Argument(..., help="Output folder (created; an existing cohort with the same settings is resumed)."),
    patients: int = typer.Option(100, "--patients", "-n", min=1, help="Number of women (one four-view exam each)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    size: str = typer.Option("small", "--size", help="small (~500-650 px tall, fast) or full (the vendors' real matrices)."),
    conspicuity: float = typer.Option(1.0, "--conspicuity", min=0.01, help="Lesion contrast multiplier (1.0: learnable, not trivial)."),
    prevalence: float = typer.Option(0.3, "--prevalence", min=0.0, max=1.0, help="Share of exams with a malignant finding."),
    benign_rate: float = typer.Option(0.35, "--benign-rate", min=0.0, max=1.0, help="Share of exams with a benign look-alike finding."),
    vendors: str = typer.Option("Hologic,GE,Siemens", "--vendors", help="Comma-separated vendors to draw from."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Worker processes (results do not depend on it)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON to stdout."),
) -> None:
    """Write a synthetic multi-vendor screening cohort with ground truth.

    OUT/dicom/<patient>/<study>/<sop>.dcm (MG DICOM, four views per exam), OUT/masks/,
    OUT/annotations.csv, OUT/manifest.csv (ready for `mammolens preprocess`) and
    OUT/README.txt. Interrupted runs resume.

    Example:

        mammolens synth synth_out --patients 150 --seed 0 --workers 2
    """
    from mammolens.data.synthetic import VENDORS, synthesize_cohort
    from mammolens.errors import EXIT_USAGE

    names = [v.strip() for v in vendors.split(",") if v.strip()]
    canon = {k.lower(): k for k in VENDORS}
    bad = [v for v in names if v.lower() not in canon]
    if size not in ("small", "full") or bad or not names:
        msg = f"--size must be small or full, got {size!r}" if size not in ("small", "full") else (
            f"unknown vendor(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(VENDORS)}")
        console.print(f"[bold red]usage error:[/] {msg}")
        raise typer.Exit(EXIT_USAGE)
    with cli_errors():
        with callback_bar("synth (patients)", total=patients) as step:
            result = synthesize_cohort(
                out, n_patients=patients, seed=seed, size=size, conspicuity=conspicuity, prevalence=prevalence,
                benign_rate=benign_rate, vendors=[canon[v.lower()] for v in names], workers=workers, progress=step,
            )
    if json_out:
        emit_json(result.to_dict())
    else:
        console.print(
            f"synth: {result.n_patients} patient(s), {result.n_images} image(s) "
            f"({result.n_malignant_exams} malignant exam(s), {result.n_positive_images} label-1 image(s)) "
            f"in {result.seconds:.1f} s -> {result.out_dir}\nmanifest: {result.manifest_path}"
        )
