"""The heads stage: heads fitted on frozen features; features reused across calls (CV folds)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mammolens.models import create_model  # noqa: E402
from mammolens.train import head_stage  # noqa: E402
from mammolens.train.head_stage import fit_heads  # noqa: E402


def _items(n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.random((64, 48), dtype=np.float32) * 0.2
        mask = np.zeros((64, 48), np.uint8)
        y = i % 2
        if y:
            r, c = rng.integers(8, 40), rng.integers(8, 30)
            img[r : r + 12, c : c + 12] += 0.8  # a bright "lesion"
            mask[r : r + 12, c : c + 12] = 2
        out.append((img, mask, y))
    return out


def test_heads_learn_a_planted_lesion_and_leave_the_backbone(monkeypatch):
    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4, score="localization")
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    res = fit_heads(m, _items(24, 0), _items(12, 1), epochs=15, lr=1e-2, patience=15, seed=0)
    assert res.best_val_auc is not None and res.best_val_auc > 0.8
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_features_are_computed_once_per_image_across_calls(monkeypatch):
    monkeypatch.setattr(head_stage, "_MEMO", {})
    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4)
    calls = {"n": 0}
    real = m.forward_features

    def counting(x):
        calls["n"] += 1
        return real(x)

    monkeypatch.setattr(m, "forward_features", counting)
    tr, va = _items(6, 0), _items(4, 1)
    keys_tr, keys_va = [f"c::{i}" for i in range(6)], [f"c::v{i}" for i in range(4)]
    fit_heads(m, tr, va, epochs=1, train_keys=keys_tr, val_keys=keys_va)
    first = calls["n"]
    assert first == 10
    fit_heads(m, tr, va, epochs=1, train_keys=keys_tr, val_keys=keys_va)
    assert calls["n"] == first  # the second fold's overlapping images were not recomputed
    # another backbone (a different fingerprint) computes its own
    torch.manual_seed(1)
    m2 = create_model("attention_tiny", pretrained="none", tiny_width=4)
    assert head_stage.backbone_fingerprint(m2.backbone) != head_stage.backbone_fingerprint(m.backbone)
