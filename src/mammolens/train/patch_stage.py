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
  :func:`~mammolens.train.patch_pretrain.save_backbone_weights`), loadable by
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

import json
import shlex
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
from mammolens.qc import QCTable
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


@dataclass
class CachedSelection:
    """The images of the chosen splits that :func:`select_cached_images` read from the cache."""

    #: the validated manifest (all rows)
    df: pd.DataFrame
    #: the manifest's path as given (``"MANIFEST"`` for a DataFrame)
    manifest_name: str
    #: normalised split names (``["all"]`` for every row)
    splits: list[str]
    #: ids of the rows of the chosen splits
    chosen_ids: list[str]
    #: ids of every other row: never loaded, to be passed as ``exclude``
    held_ids: list[str]
    #: the opened cache and its folder
    cache: Any
    cache_root: str
    #: one ``reject`` row per chosen image the cache could not give (or ``visit`` refused)
    qc: QCTable
    manifest_hash: str

    @property
    def n_rejected(self) -> int:
        return len(self.qc.rejected)

    @property
    def rejected_ids(self) -> list[str]:
        return [r.image_id for r in self.qc.rejected]


def check_weights_path(out: str | Path, *, arch: str) -> Path:
    """``out`` as a Path; a ``.json`` / ``.csv`` name (the report's and QC table's suffixes) is a ConfigError."""
    out = Path(out)
    if out.suffix.lower() in (".json", ".csv"):
        raise ConfigError(f"{out}: the weights file must not end in {out.suffix} (use e.g. patch_{arch}.pt)")
    return out


def select_cached_images(
    manifest: str | Path | pd.DataFrame,
    cache: Any,
    *,
    splits: Iterable[str],
    stage: str,
    visit: Callable[[Any, np.ndarray, np.ndarray | None], str | None],
) -> CachedSelection:
    """Read the manifest, choose the rows of ``splits`` and load each of them from the cache.

    Shared by the pretraining stages (``pretrain-patches``, ``pretrain-ssl``). Rows of
    other splits are never loaded (their ids are returned in ``held_ids``, for the
    ``exclude`` of the training function). Patient-level leakage between splits is
    checked whenever the manifest has splits.

    Parameters
    ----------
    manifest
        Manifest path (CSV / Parquet) or DataFrame.
    cache
        Cache folder written by ``mammolens preprocess`` or an opened cache.
    splits
        Split names (``train``, ``val``, ``test``), or ``("all",)`` for every row (no split
        column needed).
    stage
        Stage name written in the QC rows.
    visit
        Called as ``visit(row, image, mask)`` for every chosen row the cache could read
        (``row`` is the manifest row as a namedtuple, ``mask`` ``None`` when the cache has
        none). It returns ``None`` when the image is handled (kept or skipped by the
        caller), or a reason string that rejects it with a QC row naming the cached file.

    Returns
    -------
    CachedSelection

    Raises
    ------
    ConfigError
        No / unknown / mixed splits, no split column (without ``all``), no row in the
        chosen splits.
    """
    from mammolens.data.cache import CacheError, open_cache
    from mammolens.data.manifest import (
        check_no_leakage,
        manifest_hash,
        read_manifest,
        validate_manifest,
    )

    if isinstance(manifest, pd.DataFrame):
        df, mname = validate_manifest(manifest), "MANIFEST"
    else:
        df, mname = read_manifest(manifest), str(manifest)
    splits_l = [str(s).strip().lower() for s in splits]
    if not splits_l:
        raise ConfigError("choose at least one split (e.g. train), or 'all' for every row")
    use_all = "all" in splits_l
    if use_all and len(splits_l) > 1:
        raise ConfigError(f"'all' cannot be combined with other splits, got {splits_l}")
    has_split = "split" in df.columns and bool((df["split"].astype(str) != "").any())
    if not use_all:
        if not has_split:
            raise ConfigError(
                f"{mname}: the manifest has no split assignments; run `mammolens split` first "
                "(or pass --split all to pretrain on every image, if no evaluation image is in this manifest)"
            )
        bad = sorted(set(splits_l) - {"train", "val", "test"})
        if bad:
            raise ConfigError(f"unknown split(s) {bad}; choose from train, val, test (or all)")
    if has_split:
        check_no_leakage(df)
    sel = np.ones(len(df), bool) if use_all else df["split"].astype(str).isin(splits_l).to_numpy()
    chosen, held = df[sel], df[~sel]
    if chosen.empty:
        raise ConfigError(f"{mname}: no image in split(s) {splits_l}")
    cache_obj = open_cache(cache) if isinstance(cache, str | Path) else cache

    qc = QCTable()
    for r in chosen.itertuples(index=False):
        iid, path = str(r.image_id), str(r.path)
        try:
            img, mask, _ = cache_obj.load(iid)
        except CacheError as e:
            if iid in cache_obj:  # indexed, but its array file is gone or corrupt
                qc.add(stage, _cache_file(cache_obj, iid) or path, f"cannot read cached array: {e}", image_id=iid)
            else:  # the cache's message says whether preprocessing rejected it
                qc.add(stage, path, f"not in the cache (missing or rejected by preprocessing): {e}", image_id=iid)
            continue
        reason = visit(r, img, mask)
        if reason is not None:
            qc.add(stage, _cache_file(cache_obj, iid) or path, reason, image_id=iid)
        del img, mask
    return CachedSelection(
        df=df,
        manifest_name=mname,
        splits=splits_l,
        chosen_ids=chosen["image_id"].astype(str).tolist(),
        held_ids=held["image_id"].astype(str).tolist(),
        cache=cache_obj,
        cache_root=str(getattr(cache_obj, "root", cache)),
        qc=qc,
        manifest_hash=manifest_hash(df),
    )


def follow_up_command(manifest: str, cache: str, weights: Path, *, arch: str, tiny_width: int) -> str:
    """The ``mammolens train`` command that starts the whole-image model from ``weights``."""
    run = weights.parent / f"{weights.stem}_run"
    parts = ["mammolens", "train", manifest, "--cache", cache, "--out", str(run),
             "--set", f"model.arch={arch}", "--set", f"model.pretrained={weights}"]
    if arch == "tiny":
        parts += ["--set", f"model.tiny_width={tiny_width}"]
    return " ".join(shlex.quote(p) for p in parts)


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
        See :func:`~mammolens.train.patch_pretrain.pretrain_backbone`.
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
        preprocess=_settings_dict(cache_obj),
        used_ids=ids,
        no_annotation_ids=no_annotation,
        rejected_ids=[r.image_id for r in qc.rejected],
    )
    return result


def _cache_file(cache_obj: Any, iid: str) -> str:
    try:
        return str(cache_obj.path(iid))
    except Exception:  # noqa: BLE001 - only used to name the file in a QC row
        return ""


def _settings_dict(cache_obj: Any) -> dict[str, Any] | None:
    s = getattr(cache_obj, "settings", None)
    if s is None:
        return None
    try:
        return json.loads(s.model_dump_json())
    except Exception:  # noqa: BLE001 - the report is still useful without it
        return None


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
