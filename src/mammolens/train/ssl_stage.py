"""Self-supervised (SimCLR) pretraining as a pipeline stage: manifest + cache -> backbone weights.

:func:`pretrain_ssl_from_cache` is what ``mammolens pretrain-ssl`` runs. It reads the
manifest, loads the images of the chosen splits (``train`` by default; labels are not
used, so every image of those splits counts) from the preprocessing cache -- the pixel
scale the whole-image model sees -- and calls
:func:`mammolens.train.ssl_pretrain.ssl_pretrain`. Every other image of the manifest is
never loaded and is passed as ``exclude``, so a held-out image can never give a patch.
Selection, cache loading and QC are shared with ``pretrain-patches``
(:func:`mammolens.train.cached_images.select_cached_images`).

Outputs (``OUT`` is the weights file):

* ``OUT``: backbone state dict + ``meta`` (no ``patch_head``), loadable by
  ``create_model(name, pretrained=OUT)`` and usable as ``pretrain-patches --init OUT``;
* ``OUT.json`` (``OUT`` with suffix ``.json``): the report (settings, counts, per-epoch
  history, image ids, manifest hash, versions, follow-up commands);
* ``OUT_qc.csv`` (next to ``OUT``) when some images were rejected (not in the cache,
  unreadable cached array).

References
----------
.. [1] Chen T, Kornblith S, Norouzi M, Hinton G. A simple framework for contrastive
   learning of visual representations. ICML 2020, PMLR 119:1597-1607.
.. [2] Miller JD, Arasu VA, Pu AX, Margolies LR, Sieh W, Shen L. Self-supervised deep
   learning to enhance breast cancer detection on screening mammography. arXiv 2022.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens import __version__
from mammolens.errors import ConfigError
from mammolens.jsonio import write_json
from mammolens.train.cached_images import (
    check_weights_path,
    follow_up_command,
    preprocess_settings,
    select_cached_images,
)
from mammolens.train.loop import resolve_device

STAGE = "pretrain-ssl"


@dataclass
class SSLStageResult:
    """What :func:`pretrain_ssl_from_cache` did (``to_dict()`` is the CLI's ``--json``)."""

    weights: Path
    report: Path
    qc_path: Path | None
    arch: str
    splits: list[str]
    n_patches: int
    #: images read from the cache (chosen splits, not rejected)
    n_images_loaded: int
    #: images that gave patches (loaded minus those without a valid breast window)
    n_images_used: int
    n_images_rejected: int
    n_images_excluded: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    follow_up: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": str(self.weights),
            "report": str(self.report),
            "qc_path": None if self.qc_path is None else str(self.qc_path),
            "arch": self.arch,
            "splits": list(self.splits),
            "n_patches": self.n_patches,
            "n_images_loaded": self.n_images_loaded,
            "n_images_used": self.n_images_used,
            "n_images_rejected": self.n_images_rejected,
            "n_images_excluded": self.n_images_excluded,
            "history": [dict(h) for h in self.history],
            "seconds": self.seconds,
            "device": self.device,
            "follow_up": list(self.follow_up),
        }


def ssl_follow_up_commands(manifest: str, cache: str, weights: Path, *, arch: str, tiny_width: int) -> list[str]:
    """The two ways on from SSL weights: supervised patch pretraining, or whole-image training."""
    patch_out = weights.parent / f"{weights.stem}_patch.pt"
    tiny = ["--tiny-width", str(tiny_width)] if arch == "tiny" else []
    patch = ["mammolens", "pretrain-patches", manifest, "--cache", cache, "--out", str(patch_out),
             "--arch", arch, *tiny, "--init", str(weights)]
    return [" ".join(shlex.quote(p) for p in patch), follow_up_command(manifest, cache, weights, arch=arch, tiny_width=tiny_width)]


def pretrain_ssl_from_cache(
    manifest: str | Path | pd.DataFrame,
    cache: Any,
    out: str | Path,
    *,
    arch: str = "resnet18",
    tiny_width: int = 16,
    init: str | Path = "none",
    splits: Iterable[str] = ("train",),
    patch_size: int = 96,
    per_image: int = 32,
    min_breast_fraction: float = 0.6,
    resample: bool = True,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    temperature: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[dict[str, float]], None] | None = None,
    max_steps: int | None = None,
) -> SSLStageResult:
    """Pretrain a backbone with SimCLR on breast patches of the cached images of ``splits``.

    Parameters
    ----------
    manifest
        Manifest path (CSV / Parquet) or DataFrame; patient-level leakage between splits
        is checked. Labels and lesion annotations are not used.
    cache
        Cache folder written by ``mammolens preprocess`` (or an opened cache).
    out
        Weights file to write (``.pt``). The report goes to ``out`` with suffix ``.json``,
        the QC table (if any image was rejected) to ``<stem>_qc.csv`` beside it.
    arch, tiny_width, init
        Backbone, width of ``tiny`` and starting weights (``"none"``, ``"imagenet"`` or a
        file).
    splits
        Splits whose images give patches (default ``("train",)``); every other row is
        never loaded and is excluded. ``("all",)`` uses every row and needs no split
        column (only for a manifest whose evaluation images live elsewhere).
    patch_size, per_image, min_breast_fraction, resample
        See :func:`mammolens.train.ssl_pretrain.ssl_pretrain`.
    epochs, batch_size, lr, temperature, seed, max_steps
        See :func:`mammolens.train.ssl_pretrain.ssl_pretrain_backbone`.
    device
        ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``.
    progress
        Called with each epoch's record (``epoch, loss, accuracy, chance, lr, ...``).

    Returns
    -------
    SSLStageResult

    Raises
    ------
    ConfigError
        No split column (without ``splits=("all",)``), unknown split, no row in the chosen
        splits, nothing readable in the cache, or no patch (see ``ssl_pretrain``).
    """
    from mammolens.train.ssl_pretrain import ssl_pretrain

    t0 = time.time()
    out = check_weights_path(out, arch=arch)
    images: list[np.ndarray] = []
    ids: list[str] = []

    def visit(r: Any, img: np.ndarray, mask: np.ndarray | None) -> str | None:
        images.append(np.asarray(img, dtype=np.float32))
        ids.append(str(r.image_id))
        return None

    sel = select_cached_images(manifest, cache, splits=splits, stage=STAGE, visit=visit)
    mname = sel.manifest_name
    if not ids:
        raise ConfigError(
            f"{mname}: no usable image in split(s) {sel.splits}: all {sel.n_rejected} are missing from the cache "
            f"{sel.cache_root} or unreadable; run `mammolens preprocess` first"
        )
    dev = resolve_device(device)
    res = ssl_pretrain(
        images, ids, out, arch=arch, tiny_width=tiny_width, init=init, exclude=sel.held_ids,
        patch_size=patch_size, per_image=per_image, min_breast_fraction=min_breast_fraction, resample=resample,
        epochs=epochs, batch_size=batch_size, lr=lr, temperature=temperature, seed=seed, device=dev,
        max_steps=max_steps, progress=progress,
    )
    images.clear()  # the sampler kept its own references; free ours
    qc_path = sel.qc.write_csv(out.with_name(out.stem + "_qc.csv")) if len(sel.qc) else None
    weights = Path(res.path or out)
    result = SSLStageResult(
        weights=weights,
        report=out.with_suffix(".json"),
        qc_path=qc_path,
        arch=arch,
        splits=sel.splits,
        n_patches=res.n_patches,
        n_images_loaded=len(ids),
        n_images_used=res.n_images,
        n_images_rejected=sel.n_rejected,
        n_images_excluded=len(sel.held_ids),
        history=[dict(h) for h in res.history],
        seconds=time.time() - t0,
        device=dev,
        follow_up=ssl_follow_up_commands(mname, sel.cache_root, weights, arch=arch, tiny_width=tiny_width),
    )
    import torch

    write_json(result.report, {
        "stage": STAGE,
        "reference": "Chen et al. 2020, ICML (SimCLR); Miller et al. 2022 (self-supervised mammography pretraining)",
        **result.to_dict(),
        "settings": {
            "arch": arch, "tiny_width": tiny_width, "init": str(init), "splits": sel.splits,
            "patch_size": patch_size, "per_image": per_image, "min_breast_fraction": min_breast_fraction,
            "resample": resample, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "temperature": temperature, "seed": seed, "device": dev, "max_steps": max_steps,
        },
        "manifest": mname,
        "manifest_hash": sel.manifest_hash,
        "cache": sel.cache_root,
        "preprocess": preprocess_settings(sel.cache),
        "mammolens_version": __version__,
        "torch_version": str(torch.__version__),
        "image_ids_used": ids,
        "image_ids_rejected": sel.rejected_ids,
    })
    return result
