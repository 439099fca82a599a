"""``mammolens train``: manifest + cache -> a run folder (checkpoints, logs, metadata)."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import (
    cli_errors,
    config_option,
    console,
    device_option,
    emit_json,
    json_option,
    model_option,
    quiet_option,
    set_option,
)


def train(
    manifest: Path = typer.Argument(..., help="Manifest with train/val splits and 0/1 labels (after `mammolens split`)."),
    cache: Path = typer.Option(..., "--cache", "-c", help="Cache folder written by `mammolens preprocess`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (checkpoints, config.yaml, meta.json, metrics.csv, tensorboard/)."),
    config: str = config_option("tiny"),
    model: str = model_option(),
    set_: list[str] = set_option(),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from RUN/checkpoints/last.ckpt."),
    device: str = device_option(),
    json_out: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Train the attention model (or the baseline) with the study's recipe.

    Adam, ReduceLROnPlateau on validation loss, flips/rotation/intensity augmentation,
    early stopping on validation AUC; best and last checkpoints; resumable. Multi-GPU:
    see docs/training.md (torchrun / SLURM with --set train.devices=N).

    Example:

        mammolens train data/manifest.csv --cache cache/ --config paper --out runs/attention --set train.max_epochs=30
    """
    from mammolens.train.api import train as run_train

    with cli_errors():
        res = run_train(
            manifest,
            cache,
            config=config,
            out=out,
            model=model or None,
            overrides=list(set_),
            resume=resume,
            device=device,
            progress=not quiet and not json_out,
        )
    if json_out:
        emit_json(res.to_dict())
        return
    auc = "n/a" if res.best_val_auc is None else f"{res.best_val_auc:.3f}"
    console.print(
        f"train: {res.model} {res.status} after {res.epochs_run} epoch(s) in {res.seconds:.0f} s; "
        f"best validation AUC {auc}\n  best: {res.best_checkpoint}\n  last: {res.last_checkpoint}"
    )
    if res.excluded:
        console.print(f"[yellow]{res.excluded} image(s) left out (not in the cache)[/]: {res.qc_path}")
