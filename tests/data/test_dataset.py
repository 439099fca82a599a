"""The Dataset over manifest + cache: items, mask flags, seeded joint augmentation, sampler."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from mammolens.config import AugmentConfig  # noqa: E402
from mammolens.data.dataset import MammoDataset, class_weights_sampler  # noqa: E402
from mammolens.data.transform import Transform  # noqa: E402


class _FakeCache:
    """Small arrays with a bright square lesion in positives (a mask for some)."""

    def __init__(self, n: int = 6, size: tuple[int, int] = (32, 24)) -> None:
        self.data = {}
        rng = np.random.default_rng(0)
        for i in range(n):
            img = rng.uniform(0.2, 0.4, size).astype(np.float32)
            mask = None
            if i % 2 == 1:
                img[4:12, 2:10] = 0.9
                if i % 4 == 1:
                    mask = np.zeros(size, np.uint8)
                    mask[4:12, 2:10] = 2
            self.data[f"I{i}"] = (img, mask, Transform.identity(*size))
        self.settings = SimpleNamespace(size=size)

    def load(self, image_id):
        return self.data[image_id]

    def __contains__(self, k):
        return k in self.data


def _rows(n=6):
    return pd.DataFrame({"image_id": [f"I{i}" for i in range(n)], "label": [i % 2 for i in range(n)]})


def test_dataset_items_and_mask_flags():
    ds = MammoDataset(_rows(), _FakeCache(), augment_cfg=None)
    it = ds[1]
    assert it["image"].shape == (1, 32, 24) and it["image"].dtype == torch.float32
    assert it["mask"].shape == (32, 24) and it["has_mask"] and it["label"] == 1.0
    assert not ds[3]["has_mask"]  # malignant without a mask: weak supervision
    assert not ds[0]["has_mask"]  # normal without annotations
    with pytest.raises(ValueError, match="without a label"):
        MammoDataset(pd.DataFrame({"image_id": ["I0"], "label": [pd.NA]}), _FakeCache())


def test_augmentation_is_deterministic_and_joint():
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rotate_deg=20, rotate_p=1.0, intensity_p=1.0)
    ds = MammoDataset(_rows(), _FakeCache(), augment_cfg=cfg, seed=3)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    ds.set_epoch(1)
    c = ds[1]
    assert not torch.equal(a["image"], c["image"])
    # the mask follows the lesion: the masked pixels are the bright ones
    for epoch in range(6):
        ds.set_epoch(epoch)
        it = ds[1]
        m = it["mask"] == 2
        assert m.sum() > 20
        inside = it["image"][0][m].mean()
        outside = it["image"][0][~m & (it["image"][0] > 0)].mean()
        assert inside > outside + 0.2


def test_weighted_sampler_balances_classes():
    y = np.array([0] * 90 + [1] * 10)
    s = class_weights_sampler(y, seed=0)
    drawn = y[list(iter(s))]
    assert 0.35 < drawn.mean() < 0.65
