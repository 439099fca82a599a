"""Reading the preprocessing cache written by :func:`mammolens.data.preprocess.preprocess_manifest`.

>>> cache = open_cache("cache/")                          # doctest: +SKIP
>>> image, mask, transform = cache.load("mdb001")          # doctest: +SKIP

``image`` is float32 ``(H, W)`` in [0, 1] with the chest wall on the left (the default
``flip_to``), ``mask`` uint8 ``(H, W)`` with 0 background, 1 benign/unknown lesion,
2 malignant lesion, or ``None`` when the image had no lesion annotations, and
``transform`` the :class:`~mammolens.data.transform.Transform` from the original image.

:meth:`Cache.load` is what training's DataLoader workers call in their hot loop: it is a
dict lookup and one or two ``np.load`` calls (no pandas). The object pickles cheaply, so
it can be handed to DataLoader worker processes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mammolens.data.preprocess import (
    INDEX_FILE,
    SETTINGS_FILE,
    PreprocessSettings,
    decode_image,
    read_index_rows,
)
from mammolens.data.transform import Transform
from mammolens.errors import MammolensError


class CacheError(MammolensError):
    """A missing or foreign cache folder, or an image that is not in the cache."""


class Cache:
    """A preprocessed-image cache folder (read-only view).

    Attributes
    ----------
    root
        The cache folder.
    settings
        The :class:`~mammolens.data.preprocess.PreprocessSettings` it was built with.
    key
        ``settings.key()``.
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise CacheError(f"{root}: cache folder not found (run `mammolens preprocess` first)")
        sfile = root / SETTINGS_FILE
        if not sfile.exists():
            raise CacheError(f"{root}: not a mammolens cache (no {SETTINGS_FILE}); run `mammolens preprocess` first")
        try:
            meta = json.loads(sfile.read_text(encoding="utf-8"))
            self.settings = PreprocessSettings.model_validate(meta["settings"])
        except (ValueError, KeyError, TypeError) as e:
            raise CacheError(f"{sfile}: not a mammolens cache settings file ({e})") from None
        self.root = root
        self.key = self.settings.key()
        try:
            rows = read_index_rows(root / INDEX_FILE)
        except MammolensError as e:
            raise CacheError(str(e)) from None
        # latest row per image, only rows made with these settings
        self._rows: dict[str, dict[str, str]] = {}
        for r in rows:
            if r.get("key") == self.key:
                self._rows[r["image_id"]] = r
        self._ok: dict[str, tuple[str, str, str]] = {
            iid: (str(root / r["file"]), str(root / r["mask_file"]) if r["mask_file"] else "", r["transform"])
            for iid, r in self._rows.items()
            if r["status"] == "ok" and r["file"]
        }
        self._tf: dict[str, Transform] = {}
        self._index = None

    # -- lookup ------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[str]:
        """Ids of the images available (status ok), in index order."""
        return list(self._ok)

    def has(self, image_id: str) -> bool:
        """Whether ``image_id`` was preprocessed successfully."""
        return str(image_id) in self._ok

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._ok

    def __len__(self) -> int:
        return len(self._ok)

    @property
    def index(self) -> Any:  # pandas.DataFrame
        """The index as a DataFrame (every image, ok and rejected)."""
        if self._index is None:
            import pandas as pd

            from mammolens.data.preprocess import INDEX_COLUMNS

            df = pd.DataFrame(list(self._rows.values()), columns=INDEX_COLUMNS)
            for c in ("height", "width", "has_mask"):
                df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
            df["has_mask"] = df["has_mask"].fillna(0).astype(bool)
            df["seconds"] = pd.to_numeric(df["seconds"], errors="coerce")
            self._index = df
        return self._index

    def _entry(self, image_id: str) -> tuple[str, str, str]:
        try:
            return self._ok[image_id]
        except KeyError:
            r = self._rows.get(str(image_id))
            if r is not None and r["status"] != "ok":
                raise CacheError(f"{self.root}: image {image_id!r} was rejected by preprocessing: {r['reason']}") from None
            raise CacheError(f"{self.root}: image {image_id!r} is not in the cache (run `mammolens preprocess` on a manifest that has it)") from None

    def transform(self, image_id: str) -> Transform:
        """The :class:`Transform` from the original image to the cache image."""
        tf = self._tf.get(image_id)
        if tf is None:
            tf = self._tf[image_id] = Transform.from_json(self._entry(image_id)[2])
        return tf

    def path(self, image_id: str) -> Path:
        """The image array file of ``image_id``."""
        return Path(self._entry(image_id)[0])

    # -- loading -------------------------------------------------------------------------
    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray | None, Transform]:
        """Load ``(image float32 (H, W) in [0, 1], mask uint8 (H, W) or None, transform)``.

        Raises :class:`CacheError` for an image that is not in the cache or whose array
        file has gone.
        """
        file, mask_file, _ = self._entry(image_id)
        try:
            image = decode_image(np.load(file, allow_pickle=False))
            mask = np.load(mask_file, allow_pickle=False) if mask_file else None
        except (OSError, ValueError) as e:
            raise CacheError(f"{file}: cannot read cached array of {image_id!r} ({e}); run `mammolens preprocess` again to regenerate it") from None
        return image, mask, self.transform(image_id)

    def load_image(self, image_id: str) -> np.ndarray:
        """Only the image (float32 (H, W) in [0, 1])."""
        return self.load(image_id)[0]

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, images={len(self._ok)}, size={self.settings.size}, key={self.key})"

    # pickling: drop the lazily built DataFrame (workers rarely need it)
    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_index"] = None
        return d


def open_cache(root: str | Path) -> Cache:
    """Open a cache folder written by ``mammolens preprocess``; :class:`CacheError` if it is not one."""
    return Cache(root)
