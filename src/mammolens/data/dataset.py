"""A torch Dataset over a manifest and a preprocessing cache, with joint augmentation.

Each item is a dict::

    image     float32 tensor (1, H, W) in [0, 1] (cache geometry)
    mask      uint8 tensor (H, W): 0 background, 1 benign, 2 malignant (zeros if none)
    has_mask  bool: the mask can supervise the localisation map densely (a mask exists
              and, for a malignant image, marks some malignant pixel)
    label     float32 (NaN when unknown; only allowed with ``require_labels=False``)
    benign    float32: 1 / 0 a benign finding or not, NaN unknown
              (:func:`mammolens.data.manifest.benign_labels`; the optional benign output)
    image_id  str
    index     int (row in the dataset)

Augmentation (training only) is applied to image and mask together by
:func:`mammolens.data.augment.whole_image_augment`: random horizontal / vertical flips, a
rotation (bilinear for the image, nearest for the mask, zero fill), and intensity changes
on the breast (non-zero) pixels: contrast around the mean, brightness shift and gamma.
The random draws come from a generator seeded with ``(seed, epoch, index)``, so an epoch
is reproducible whatever the worker layout; call :meth:`MammoDataset.set_epoch` at the
start of each epoch (the training module does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mammolens.data.augment import whole_image_augment
from mammolens.data.lesions import MASK_MALIGNANT
from mammolens.data.manifest import benign_labels


def _open_cache(cache: Any) -> Any:
    if isinstance(cache, str | Path):
        from mammolens.data.cache import open_cache

        return open_cache(cache)
    return cache


class MammoDataset(Dataset):
    """Images of a manifest (or a subset, e.g. one split) read from a cache.

    Parameters
    ----------
    manifest
        Manifest rows (``image_id`` and ``label`` columns are used).
    cache
        A :class:`mammolens.data.cache.Cache` or its folder (opened lazily, once per
        worker process).
    augment_cfg
        :class:`mammolens.config.AugmentConfig` or ``None`` (no augmentation).
    seed
        Base seed of the augmentation draws.
    require_labels
        Raise :class:`ValueError` on rows without a label.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        cache: Any,
        *,
        augment_cfg: Any = None,
        seed: int = 0,
        require_labels: bool = True,
    ) -> None:
        self.rows = manifest.reset_index(drop=True)
        self.image_ids = [str(x) for x in self.rows["image_id"]]
        labels = pd.to_numeric(self.rows["label"], errors="coerce") if "label" in self.rows else pd.Series(np.nan, index=self.rows.index)
        self.labels = labels.astype(float).to_numpy()
        if require_labels and np.isnan(self.labels).any():
            missing = [i for i, v in zip(self.image_ids, self.labels, strict=True) if np.isnan(v)]
            raise ValueError(f"{len(missing)} image(s) without a label, e.g. {missing[:3]}")
        self.benign = benign_labels(self.rows).astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        self._cache_spec = cache
        self._cache = None if isinstance(cache, str | Path) else cache
        self.augment_cfg = augment_cfg if (augment_cfg is not None and getattr(augment_cfg, "enabled", True)) else None
        self.augment = None if self.augment_cfg is None else whole_image_augment(self.augment_cfg)
        self.seed = int(seed)
        self.epoch = 0

    @property
    def cache(self) -> Any:
        if self._cache is None:
            self._cache = _open_cache(self._cache_spec)
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self._cache_spec, str | Path):
            state["_cache"] = None  # each worker opens its own
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.image_ids)

    def generator(self, index: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch * 100_003 + index) % (2**63 - 1))
        return g

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        img, mask, _tf = self.cache.load(image_id)  # CacheError names the cache and the image
        image = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).unsqueeze(0)
        label = float(self.labels[index])
        if mask is None:
            m = torch.zeros(image.shape[-2:], dtype=torch.uint8)
            has_mask = False
        else:
            m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))
            has_mask = bool(label == 0 or (m == MASK_MALIGNANT).any())
        if self.augment is not None:
            image, m = self.augment(image, m, generator=self.generator(index))
        return {"image": image, "mask": m, "has_mask": has_mask, "label": label, "benign": float(self.benign[index]),
                "image_id": image_id, "index": index}


def class_weights_sampler(labels: np.ndarray, *, seed: int = 0) -> torch.utils.data.WeightedRandomSampler:
    """A sampler drawing each class equally often (``train.imbalance: sampler``)."""
    y = np.asarray(labels).astype(int)
    counts = np.bincount(y, minlength=2).astype(float)
    w = 1.0 / counts[y]
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), num_samples=len(y), replacement=True, generator=g)
