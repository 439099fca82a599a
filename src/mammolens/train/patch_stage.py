"""Stage 1 of Shen et al. (2019) as a pipeline stage: patch pretraining from manifest + cache.

:func:`pretrain_patches_from_cache` is what ``mammolens pretrain-patches`` runs. It reads
the manifest, takes the images of the chosen splits (``train`` by default) from the
preprocessing cache (so patches are cut at the pixel scale the whole-image model sees),
builds the lesion masks the patch sampler needs and calls
:func:`mammolens.train.patch_pretrain.patch_pretrain`. Every other image of the manifest
is passed as ``exclude``, so a held-out image can never give a patch.

Masks:

* a cached mask is used as is (0 background, 1 benign/unknown, 2 malignant);
* an image without a mask whose label is 0 is lesion-free: an all-zero mask (background
  patches only);
* an image without a mask whose label is 1 or unknown holds a cancer (or may) at an
  unknown place: it gives **no** patch (a background patch could contain the cancer). These
  are counted in the report (``n_images_without_annotation``).

Outputs (``OUT`` is the weights file):

* ``OUT``: backbone state dict + ``patch_head`` + ``meta`` (see
  :func:`~mammolens.models.backbone.save_backbone_weights`), loadable by
  ``create_model(name, pretrained=OUT)``;
* ``OUT.json`` (``OUT`` with suffix ``.json``): the report (settings, counts, history,
  image ids used, manifest hash, versions, the follow-up ``mammolens train`` command);
* ``OUT_qc.csv`` (next to ``OUT``) when some images were rejected (not in the cache,
  unreadable cached array).

References
----------
.. [1] Shen L, Margolies LR, Rothstein JH, Fluder E, McBride R, Sieh W. Deep learning to
   improve breast cancer detection on screening mammography. Scientific Reports
   2019;9:12495. doi:10.1038/s41598-019-48995-4
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
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

STAGE = "pretrain-patches"
#: ``splits=ALL_SPLITS`` uses every row of the manifest (no split column needed)
ALL_SPLITS = ("all",)


@dataclass
class PatchStageResult:
    """What :func:`pretrain_patches_from_cache` did (``to_dict()`` is the CLI's ``--json``)."""

    weights: Path
    report: Path
    qc_path: Path | None
    arch: str
    splits: list[str]
    n_patches: int
    counts: dict[str, int]
    n_images_used: int
    n_images_without_annotation: int
    n_images_rejected: int
    n_images_excluded: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    follow_up: str = ""

    @property
    def rejected(self) -> int:
        return self.n_images_rejected

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": str(self.weights),
            "report": str(self.report),
            "qc_path": None if self.qc_path is None else str(self.qc_path),
            "arch": self.arch,
            "splits": list(self.splits),
            "n_patches": self.n_patches,
            "counts": dict(self.counts),
            "n_images_used": self.n_images_used,
            "n_images_without_annotation": self.n_images_without_annotation,
            "n_images_rejected": self.n_images_rejected,
            "n_images_excluded": self.n_images_excluded,
            "history": [dict(h) for h in self.history],
            "seconds": self.seconds,
            "device": self.device,
            "follow_up": self.follow_up,
        }


class _CacheSeq(Sequence):
    """Images (or masks) of a cache, loaded on access; the last load is shared by both views.

    :func:`~mammolens.train.patch_pretrain.sample_patches` walks ``zip(images, masks,
    ids)``, so keeping one loaded entry keeps memory at one image instead of the whole
    training set.
    """

    def __init__(self, loader: _Loader, what: str) -> None:
        self._loader = loader
        self._what = what

    def __len__(self) -> int:
        return len(self._loader.ids)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if isinstance(i, slice):  # pragma: no cover - not used by the sampler
            return [self[j] for j in range(*i.indices(len(self)))]
        img, mask = self._loader.get(i)
        return img if self._what == "image" else mask


class _Loader:
    def __init__(self, cache: Any, ids: list[str], zero_mask: list[bool]) -> None:
        self.cache = cache
        self.ids = ids
        self.zero_mask = zero_mask
        self._i: int | None = None
        self._entry: tuple[np.ndarray, np.ndarray | None] = (np.zeros((0, 0), np.float32), None)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if i < 0:
            i += len(self.ids)
        if not 0 <= i < len(self.ids):
            raise IndexError(i)
        if self._i != i:
            img, mask, _ = self.cache.load(self.ids[i])
            if mask is None and self.zero_mask[i]:
                mask = np.zeros(img.shape, np.uint8)
            self._i, self._entry = i, (img, mask)
        return self._entry


def pretrain_patches_from_cache(
    manifest: str | Path | pd.DataFrame,
    cache: Any,
    out: str | Path,
    *,
    arch: str = "resnet18",
    tiny_width: int = 16,
    init: str | Path = "none",
    splits: Iterable[str] = ("train",),
    patch_size: int = 96,
    per_lesion: int = 16,
    background_per_image: int = 12,
    classes: int = 2,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    augment: bool = True,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[dict[str, float]], None] | None = None,
    max_steps: int | None = None,
    freeze: str = "none",
) -> PatchStageResult:
    """Pretrain a backbone on lesion vs background patches of the cached training images.

    Parameters
    ----------
    manifest
        Manifest path (CSV / Parquet) or DataFrame. Patient-level leakage between splits
        is checked.
    cache
        Cache folder written by ``mammolens preprocess`` (or an opened
        :class:`~mammolens.data.cache.Cache`).
    out
        Weights file to write (``.pt``). The report goes to ``out`` with suffix ``.json``,
        the QC table (if any image was rejected) to ``<stem>_qc.csv`` beside it.
    arch, tiny_width, init
        Backbone (``tiny``, ``resnet18``, ``resnet34``, ``resnet50``), width of ``tiny`` and
        starting weights (``"none"``, ``"imagenet"`` or a file).
    splits
        Splits whose images give patches (default ``("train",)``); every other row is
        excluded. ``("all",)`` uses every row and needs no split column (only for a
        manifest whose evaluation images live elsewhere).
    patch_size
        Patch side in pixels of the cache images: it should cover a lesion with some
        context (96 px at ~400 um/pixel is ~38 mm).
    per_lesion, background_per_image, classes
        See :func:`~mammolens.train.patch_pretrain.sample_patches` (``classes`` 2:
        background / lesion, 3: background / benign / malignant).
    epochs, batch_size, lr, augment, seed, max_steps
        See :func:`~mammolens.train.patch_pretrain.patch_pretrain_backbone`.
    device
        ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``.
    progress
        Called with each epoch's record (``epoch, loss, accuracy``).

    Returns
    -------
    PatchStageResult

    Raises
    ------
    ConfigError
        No split column (without ``splits=("all",)``), no rows in the chosen splits,
        nothing usable in the cache, or no lesion annotation among the chosen images.
    """
    from mammolens.train.patch_pretrain import patch_pretrain

    t0 = time.time()
    out = check_weights_path(out, arch=arch)
    ids: list[str] = []
    zero_mask: list[bool] = []
    no_annotation: list[str] = []
    n_lesion_images = 0

    def visit(r: Any, img: np.ndarray, mask: np.ndarray | None) -> str | None:
        nonlocal n_lesion_images
        if mask is not None and mask.shape != img.shape:
            return f"cached mask shape {mask.shape} differs from image {img.shape}: run `mammolens preprocess` again"
        iid = str(r.image_id)
        if mask is None:
            if pd.isna(r.label) or int(r.label) != 0:
                no_annotation.append(iid)  # cancer (or unknown) at an unknown place: no patch
                return None
            zero_mask.append(True)
        else:
            zero_mask.append(False)
            n_lesion_images += int(bool((mask > 0).any()))
        ids.append(iid)
        return None

    sel = select_cached_images(manifest, cache, splits=splits, stage=STAGE, visit=visit)
    mname, splits_l, qc, cache_obj = sel.manifest_name, sel.splits, sel.qc, sel.cache
    dev = resolve_device(device)
    n_rej = sel.n_rejected
    if not ids:
        raise ConfigError(
            f"{mname}: no usable image in split(s) {splits_l} ({n_rej} not in the cache or unreadable, "
            f"{len(no_annotation)} positive without a lesion annotation); check `mammolens preprocess` and the annotations"
        )
    if n_lesion_images == 0 and per_lesion > 0:
        raise ConfigError(
            f"{mname}: the manifest has no lesion annotations in split(s) {splits_l} "
            f"({len(ids)} usable image(s), {len(no_annotation)} positive image(s) without a lesion outline): "
            "patch pretraining needs annotated lesions (the `lesions` column, rasterised into cache masks by `mammolens preprocess`)"
        )

    loader = _Loader(cache_obj, ids, zero_mask)
    res = patch_pretrain(
        _CacheSeq(loader, "image"), _CacheSeq(loader, "mask"), ids, out,
        arch=arch, tiny_width=tiny_width, init=init, exclude=sel.held_ids,
        patch_size=patch_size, per_lesion=per_lesion, background_per_image=background_per_image,
        classes=classes, epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, seed=seed,
        device=dev, max_steps=max_steps, progress=progress, freeze=freeze,
    )
    qc_path = qc.write_csv(out.with_name(out.stem + "_qc.csv")) if len(qc) else None
    weights = Path(res.path or out)
    cache_root = sel.cache_root
    follow = follow_up_command(mname, cache_root, weights, arch=arch, tiny_width=tiny_width)
    seconds = time.time() - t0
    result = PatchStageResult(
        weights=weights,
        report=out.with_suffix(".json"),
        qc_path=qc_path,
        arch=arch,
        splits=splits_l,
        n_patches=res.n_patches,
        counts=dict(res.counts),
        n_images_used=len(ids),
        n_images_without_annotation=len(no_annotation),
        n_images_rejected=n_rej,
        n_images_excluded=len(sel.held_ids),
        history=[dict(h) for h in res.history],
        seconds=seconds,
        device=dev,
        follow_up=follow,
    )
    _write_report(
        result,
        settings={
            "arch": arch, "tiny_width": tiny_width, "init": str(init), "splits": splits_l,
            "patch_size": patch_size, "per_lesion": per_lesion, "background_per_image": background_per_image,
            "classes": classes, "epochs": epochs, "batch_size": batch_size, "lr": lr, "augment": augment,
            "seed": seed, "device": dev, "max_steps": max_steps,
        },
        manifest=mname,
        cache=cache_root,
        mhash=sel.manifest_hash,
        preprocess=preprocess_settings(cache_obj),
        used_ids=ids,
        no_annotation_ids=no_annotation,
        rejected_ids=[r.image_id for r in qc.rejected],
    )
    return result


def _write_report(res: PatchStageResult, *, settings: dict[str, Any], manifest: str, cache: str, mhash: str,
                  preprocess: dict[str, Any] | None, used_ids: list[str], no_annotation_ids: list[str],
                  rejected_ids: list[str]) -> Path:
    import torch

    doc = {
        "stage": STAGE,
        "reference": "Shen et al. 2019, Sci Rep 9:12495 (stage 1: patch classifier pretraining)",
        **res.to_dict(),
        "settings": settings,
        "manifest": manifest,
        "manifest_hash": mhash,
        "cache": cache,
        "preprocess": preprocess,
        "mammolens_version": __version__,
        "torch_version": str(torch.__version__),
        "image_ids_used": used_ids,
        "image_ids_without_annotation": no_annotation_ids,
        "image_ids_rejected": rejected_ids,
    }
    return write_json(res.report, doc)
