"""``mammolens demo``: the whole study on a synthetic cohort, CPU only, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import cli_errors, console, emit_json


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder (a rerun resumes and skips finished stages)."),
    patients: int = typer.Option(120, "--patients", "-n", min=10, help="Synthetic patients (one four-view exam each)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cohort, split, training and reader simulation."),
    size: str = typer.Option("256x208", "--size", help="Cache image size HxW."),
    workers: int = typer.Option(2, "--workers", "-j", min=1, help="Preprocessing processes."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override the tiny preset's maximum epochs."),
    readers: int = typer.Option(5, "--readers", min=2, help="Synthetic readers in the reader study."),
    patch_pretrain: bool = typer.Option(False, "--patch-pretrain/--no-patch-pretrain", help="Pretrain the backbone on lesion/background patches of the training images first."),
    conspicuity: float = typer.Option(2.0, "--conspicuity", min=0.1, help="Lesion contrast multiplier of the synthetic cohort."),
    prevalence: float = typer.Option(0.5, "--prevalence", min=0.05, max=0.95, help="Share of malignant exams in the synthetic cohort."),
    patch_epochs: int = typer.Option(6, "--patch-epochs", min=1, help="Epochs of patch pretraining."),
    json_out: bool = typer.Option(False, "--json", help="Print the headline numbers and timings as JSON to stdout."),
) -> None:
    """Synthesise a cohort, ingest, preprocess, split, train the attention model and the
    baseline, predict, simulate a reader study, evaluate and write the report.

    No GPU and no network needed. Each stage writes its output under OUT and a rerun skips
    finished stages (OUT/demo.json records them).

    Example:

        mammolens demo --out demo_out --patients 120 --seed 0
    """
    from mammolens.errors import EXIT_USAGE

    try:
        h, w = (int(v) for v in size.lower().split("x"))
        if h < 32 or w < 32:
            raise ValueError
    except ValueError:
        console.print(f"[bold red]usage error:[/] --size must be HxW with both >= 32, got {size!r}")
        raise typer.Exit(EXIT_USAGE) from None
    with cli_errors():
        from mammolens.demo import run_demo

        res = run_demo(out, patients=patients, seed=seed, size=(h, w), workers=workers, max_epochs=epochs,
                       n_readers=readers, patch_pretrain=patch_pretrain, patch_epochs=patch_epochs,
                       conspicuity=conspicuity, prevalence=prevalence, log=lambda m: console.print(f"[bold cyan]demo[/] {m}"))
    if json_out:
        emit_json(res.to_dict())
        return
    from mammolens.commands.evaluate import print_headline

    console.rule("headline (test split)")
    head = dict(res.headline)
    print_headline(head)
    if head.get("auc_baseline") is not None:
        console.print(f"baseline AUC ({head['level']} level): {head['auc_baseline']:.3f}")
    if not head.get("meets_target"):
        console.print(f"[yellow]warning:[/] the attention model's test AUC is below the demo's target {head['target_auc']:.2f}")
    console.print(f"finished in {res.seconds:.0f} s; report: [bold]{res.report}[/]")
