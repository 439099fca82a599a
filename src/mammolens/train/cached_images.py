"""What the pretraining stages share: the images of chosen splits read from the cache.

``pretrain-patches`` (:mod:`mammolens.train.patch_stage`) and ``pretrain-ssl``
(:mod:`mammolens.train.ssl_stage`) both read a manifest, take the rows of the chosen
splits from the preprocessing cache (QC rows for those it cannot give), hand every other
row to the algorithm as ``exclude``, write a weights file next to its report, and print
the ``mammolens train`` command that uses it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.errors import ConfigError
from mammolens.qc import QCTable


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
                qc.add(stage, cached_file(cache_obj, iid) or path, f"cannot read cached array: {e}", image_id=iid)
            else:  # the cache's message says whether preprocessing rejected it
                qc.add(stage, path, f"not in the cache (missing or rejected by preprocessing): {e}", image_id=iid)
            continue
        reason = visit(r, img, mask)
        if reason is not None:
            qc.add(stage, cached_file(cache_obj, iid) or path, reason, image_id=iid)
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


def cached_file(cache_obj: Any, iid: str) -> str:
    """The cached array file of ``iid`` (to name it in a QC row), or ``""``."""
    try:
        return str(cache_obj.path(iid))
    except Exception:  # noqa: BLE001 - only used to name the file in a QC row
        return ""


def preprocess_settings(cache_obj: Any) -> dict[str, Any] | None:
    """The cache's preprocessing settings as a JSON-ready dict (for the stages' reports)."""
    s = getattr(cache_obj, "settings", None)
    if s is None:
        return None
    try:
        return json.loads(s.model_dump_json())
    except Exception:  # noqa: BLE001 - the report is still useful without it
        return None
