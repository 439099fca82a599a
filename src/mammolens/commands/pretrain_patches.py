"""``mammolens pretrain-patches``: manifest + cache -> backbone weights pretrained on patches."""

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


def pretrain_patches(
    manifest: Path = typer.Argument(..., help="Manifest with splits and lesion annotations (after `mammolens split`)."),
    cache: Path = typer.Option(..., "--cache", "-c", help="Cache folder written by `mammolens preprocess`."),
    out: Path = typer.Option(..., "--out", "-o", help="Weights file to write (.pt); the report goes to OUT with suffix .json."),
    arch: str = typer.Option("resnet18", "--arch", help="Backbone: tiny, resnet18, resnet34 or resnet50 (use the whole-image model's)."),
    tiny_width: int = typer.Option(16, "--tiny-width", help="Channels of the first stage of the tiny backbone."),
    init: str = typer.Option("none", "--init", help="Starting weights: none, imagenet or a weights file."),
    split: list[str] = typer.Option(["train"], "--split", help="Split(s) that give patches (repeatable); all other images are never sampled. 'all' = every row."),
    patch_size: int = typer.Option(96, "--patch-size", help="Patch side in cache pixels; should cover a lesion with context (96 px at ~400 um/px = ~38 mm)."),
    per_lesion: int = typer.Option(16, "--per-lesion", help="Jittered patches per annotated lesion."),
    background: int = typer.Option(12, "--background", help="Background patches per image (inside the breast, off lesions)."),
    classes: int = typer.Option(2, "--classes", help="2 (background/lesion) or 3 (background/benign/malignant)."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs over the patches."),
    batch_size: int = typer.Option(64, "--batch-size", help="Patches per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (cosine decay)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (sampling and training)."),
    device: str = device_option(),
    json_out: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Pretrain the backbone as a lesion vs background patch classifier (Shen et al. 2019, stage 1).

    Patches are cut from the cached images of the chosen splits (default: train) at the
    cache's pixel scale: around each annotated lesion and at random places of the breast
    away from lesions. Positive images without a lesion outline give no patch. Writes the
    weights (backbone + patch head), a JSON report and, if some images were rejected, a
    QC table. Exit status 3 when some images were rejected.

    Example:

        mammolens pretrain-patches data/manifest.csv --cache cache/ --out runs/patch_resnet18.pt --arch resnet18 --epochs 10

        mammolens train data/manifest.csv --cache cache/ --out runs/attention --set model.arch=resnet18 --set model.pretrained=runs/patch_resnet18.pt
    """
    from mammolens.train.patch_stage import pretrain_patches_from_cache

    kwargs = {
        "arch": arch, "tiny_width": tiny_width, "init": init, "splits": tuple(split), "patch_size": patch_size,
        "per_lesion": per_lesion, "background_per_image": background, "classes": classes, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
    }
    with cli_errors():
        res = with_epoch_progress(
            lambda cb: pretrain_patches_from_cache(manifest, cache, out, progress=cb, **kwargs),
            title="patch pretraining", epochs=epochs, show=not quiet and not json_out,
            describe=lambda r: f"loss {r['loss']:.3f}, accuracy {r['accuracy']:.3f}",
        )
    status = EXIT_REJECTED if res.n_images_rejected else EXIT_OK
    if json_out:
        emit_json(res.to_dict())
        exit_with(status)
        return
    counts = ", ".join(f"{k} {v}" for k, v in res.counts.items())
    last = res.history[-1] if res.history else {}
    acc = f"{last['accuracy']:.3f}" if "accuracy" in last else "n/a"
    console.print(
        f"pretrain-patches: {res.arch} on {res.n_patches} patches ({counts}) from {res.n_images_used} image(s) "
        f"in {res.seconds:.0f} s on {res.device}; final training accuracy {acc}\n"
        f"  weights: {res.weights}\n  report:  {res.report}"
    )
    if res.n_images_without_annotation:
        console.print(f"[yellow]{res.n_images_without_annotation} positive/unlabelled image(s) without a lesion outline gave no patch[/]")
    if res.qc_path is not None:
        status = report_qc(QCTable.read_csv(res.qc_path), res.qc_path, what="image(s)")
    console.print(f"next:\n  {res.follow_up}", soft_wrap=True, markup=False, highlight=False)
    exit_with(status)
