"""``mammolens pretrain-ssl``: manifest + cache -> backbone weights pretrained with SimCLR (no labels)."""

from __future__ import annotations

from pathlib import Path

import typer

from mammolens.commands._common import (
    cli_errors,
    console,
    device_option,
    emit_json,
    exit_with,
    json_option,
    quiet_option,
    report_qc,
    with_epoch_progress,
)
from mammolens.errors import EXIT_OK, EXIT_REJECTED
from mammolens.qc import QCTable


def pretrain_ssl(
    manifest: Path = typer.Argument(..., help="Manifest with splits (after `mammolens split`); labels are not used."),
    cache: Path = typer.Option(..., "--cache", "-c", help="Cache folder written by `mammolens preprocess`."),
    out: Path = typer.Option(..., "--out", "-o", help="Weights file to write (.pt); the report goes to OUT with suffix .json."),
    arch: str = typer.Option("resnet18", "--arch", help="Backbone: tiny, resnet18, resnet34 or resnet50 (use the whole-image model's)."),
    tiny_width: int = typer.Option(16, "--tiny-width", help="Channels of the first stage of the tiny backbone."),
    init: str = typer.Option("none", "--init", help="Starting weights: none, imagenet or a weights file."),
    split: list[str] = typer.Option(["train"], "--split", help="Split(s) whose images give patches (repeatable); all other images are never loaded. 'all' = every row."),
    patch_size: int = typer.Option(96, "--patch-size", help="Patch side in cache pixels (>= 16)."),
    per_image: int = typer.Option(32, "--per-image", help="Patches per image and epoch (fresh positions every epoch)."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(128, "--batch-size", help="Patches per batch (2 views each; larger = more negatives)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate (warm-up, cosine decay)."),
    temperature: float = typer.Option(0.2, "--temperature", help="NT-Xent temperature."),
    seed: int = typer.Option(0, "--seed", help="Random seed (sampling, views and training)."),
    device: str = device_option(),
    json_out: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Pretrain the backbone without labels: SimCLR on breast patches (Chen et al. 2020).

    Patches are cut at random places inside the breast of every cached image of the
    chosen splits (default: train), whatever its label; images of other splits are never
    loaded. Two augmented views of each patch must match each other among the batch.
    Writes the weights (backbone, no head), a JSON report and, if some images were
    rejected, a QC table. Exit status 3 when some images were rejected.

    Example:

        mammolens pretrain-ssl data/manifest.csv --cache cache/ --out runs/ssl_resnet18.pt --arch resnet18 --epochs 10

        mammolens pretrain-patches data/manifest.csv --cache cache/ --out runs/patch_resnet18.pt --arch resnet18 --init runs/ssl_resnet18.pt
    """
    from mammolens.train.ssl_stage import pretrain_ssl_from_cache

    kwargs = {
        "arch": arch, "tiny_width": tiny_width, "init": init, "splits": tuple(split), "patch_size": patch_size,
        "per_image": per_image, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "temperature": temperature, "seed": seed, "device": device,
    }
    with cli_errors():
        res = with_epoch_progress(
            lambda cb: pretrain_ssl_from_cache(manifest, cache, out, progress=cb, **kwargs),
            title="SSL pretraining", epochs=epochs, show=not quiet and not json_out,
            describe=lambda r: (f"loss {r['loss']:.3f}, retrieval accuracy {r['accuracy']:.3f}"
                                f" (chance {r.get('chance', float('nan')):.3f})"),
        )
    status = EXIT_REJECTED if res.n_images_rejected else EXIT_OK
    if json_out:
        emit_json(res.to_dict())
        exit_with(status)
        return
    last = res.history[-1] if res.history else {}
    acc = f"{last['accuracy']:.3f}" if "accuracy" in last else "n/a"
    console.print(
        f"pretrain-ssl: {res.arch} on {res.n_patches} patches/epoch from {res.n_images_used} image(s) "
        f"in {res.seconds:.0f} s on {res.device}; final retrieval accuracy {acc}\n"
        f"  weights: {res.weights}\n  report:  {res.report}"
    )
    if res.n_images_used < res.n_images_loaded:
        console.print(f"[yellow]{res.n_images_loaded - res.n_images_used} image(s) had no patch inside the breast[/]")
    if res.qc_path is not None:
        status = report_qc(QCTable.read_csv(res.qc_path), res.qc_path, what="image(s)")
    console.print("next (either):\n  " + "\n  ".join(res.follow_up), soft_wrap=True, markup=False, highlight=False)
    exit_with(status)
