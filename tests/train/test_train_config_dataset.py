"""Configuration presets/overrides and the Dataset's joint augmentation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from mammolens.config import AugmentConfig, list_presets, load_config, parse_overrides
from mammolens.data.augment import rotate, whole_image_augment
from mammolens.data.dataset import MammoDataset, class_weights_sampler
from mammolens.data.transform import Transform
from mammolens.errors import ConfigError


def test_presets_and_overrides(tmp_path):
    assert {"tiny", "paper", "mias"} <= set(list_presets())
    paper = load_config("paper")
    assert paper.model.name == "attention_resnet50" and paper.optim.lr == 1e-4
    assert paper.optim.plateau_factor == 0.1 and paper.train.max_epochs == 50
    assert paper.model.pretrained == "imagenet"
    tiny = load_config("tiny", ["optim.lr=3e-4", "data.augment.hflip=0", "model.score=attention"])
    assert tiny.optim.lr == 3e-4 and tiny.data.augment.hflip == 0 and tiny.model.score == "attention"
    assert parse_overrides(["a.b=1", "c=x=y"]) == {"a.b": 1, "c": "x=y"}
    f = tmp_path / "mine.yaml"
    f.write_text(tiny.to_yaml())
    again = load_config(f)
    assert again.optim.lr == 3e-4 and again.preset == "tiny"


@pytest.mark.parametrize(
    "override,match",
    [
        ("optim.lrr=1", "unknown configuration key 'optim.lrr'"),
        ("nosection.x=1", "unknown configuration key"),
        ("optim.lr=-1", "optim.lr"),
        ("model.arch=vgg", "model.arch"),
        ("train.precision=8", "precision"),
        ("justakey", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", [override])


def test_bad_preset_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("gigantic")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  arch: tiny\n  colour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        load_config(extra)


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


def test_flips_and_rotation_exact():
    img = torch.zeros(1, 16, 12)
    img[0, 2, 3] = 1.0
    mask = torch.zeros(16, 12, dtype=torch.uint8)
    mask[2, 3] = 2
    cfg = SimpleNamespace(hflip=1.0, vflip=1.0, rotate_deg=0.0, rotate_p=0.0, intensity_p=0.0, contrast=0, brightness=0, gamma=0)
    out, m = whole_image_augment(cfg)(img, mask, generator=torch.Generator().manual_seed(0))
    assert out[0, 13, 8] == 1.0 and m[13, 8] == 2
    # a 90 degree rotation of a square image moves a point as expected
    sq = torch.zeros(1, 9, 9)
    sq[0, 1, 4] = 1.0
    sm = torch.zeros(9, 9, dtype=torch.uint8)
    sm[1, 4] = 2
    r, rm = rotate(sq, sm, math.pi / 2)
    y, x = np.unravel_index(int(r[0].argmax()), (9, 9))
    assert rm[y, x] == 2 and (y, x) in {(4, 7), (4, 1)}


def test_weighted_sampler_balances_classes():
    y = np.array([0] * 90 + [1] * 10)
    s = class_weights_sampler(y, seed=0)
    drawn = y[list(iter(s))]
    assert 0.35 < drawn.mean() < 0.65
