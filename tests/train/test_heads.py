"""The heads stage: heads fitted on frozen features; features reused across calls (CV folds)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mammolens.models import create_model  # noqa: E402
from mammolens.train import heads  # noqa: E402
from mammolens.train.heads import fit_heads  # noqa: E402


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


def _counted(fn, calls: dict):
    """``fn``, counting its calls in ``calls["n"]``."""

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        return fn(*args, **kwargs)

    return wrapper


def test_features_are_computed_once_per_image_across_calls(monkeypatch):
    monkeypatch.setattr(heads, "_MEMO", heads.FeatureMemo())
    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4)
    calls = {"n": 0}
    monkeypatch.setattr(m, "forward_features", _counted(m.forward_features, calls))
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
    assert heads.backbone_fingerprint(m2.backbone) != heads.backbone_fingerprint(m.backbone)


def test_select_last_runs_every_epoch_and_keeps_the_last():
    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4, score="localization")
    res = fit_heads(m, _items(12, 0), _items(6, 1), epochs=4, patience=1, select="last", seed=0)
    assert res.epochs_run == 4 and res.best_epoch == 4 and len(res.history) == 4
    assert res.best_val_auc == res.history[-1].get("val_auc")


def test_lesion_target_trains_the_image_label_on_the_attention_classifier():
    """loc_target=lesion: a benign finding is a positive of the map, and the image label
    (0 for a benign image) acts on the attention classifier, not on the map's LSE score."""
    from mammolens.train.losses import mammo_loss

    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4, score="localization")
    x = torch.rand(1, 1, 64, 48)
    mask = torch.zeros(1, 64, 48, dtype=torch.uint8)
    mask[0, :32, :24] = 1  # a benign finding
    batch = {"label": torch.tensor([0.0]), "mask": mask, "has_mask": torch.tensor([True])}
    out = m(x)
    loss, parts = mammo_loss(out, batch, loc_target="lesion")
    m.zero_grad()
    parts["cls"].backward(retain_graph=True)
    assert m.loc_head.weight.grad is None or m.loc_head.weight.grad.abs().sum() == 0
    assert m.classifier.weight.grad.abs().sum() > 0
    m.zero_grad()
    parts["loc"].backward()
    # the dense term pulls the benign finding's cells up (a positive target)
    from mammolens.train.losses import mask_targets

    assert mask_targets(mask, (2, 2), target="lesion").sum() > 0
    assert mask_targets(mask, (2, 2), target="malignant").sum() == 0


def test_features_in_channels_last_equal_the_nchw_forward():
    torch.manual_seed(0)
    m = create_model("attention_efficientnet_lite0", pretrained="none").eval()
    items = _items(2, 3)
    with heads._channels_last(m.backbone):
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in m.backbone.parameters() if p.dim() == 4)
        feats = heads._features(m, items, flip=True, device="cpu", progress=None)
    with torch.inference_mode():
        x = torch.from_numpy(items[1][0])[None, None]
        ref = m.forward_features(torch.cat([x, torch.flip(x, dims=[-2])]))
    assert torch.allclose(feats.c4[2:].float(), ref["c4"], atol=2e-2, rtol=1e-2)
    assert torch.allclose(feats.c3[2:].float(), ref["c3"], atol=2e-2, rtol=1e-2)
    # the model is handed back in its usual layout
    assert all(p.is_contiguous() for p in m.parameters())


def test_fit_heads_converts_the_backbone_to_channels_last_once_for_both_passes(monkeypatch):
    """One NHWC round trip per fit (per CV fold), not one per feature pass; the model is
    handed back in NCHW and the memo's fingerprint is taken once."""
    monkeypatch.setattr(heads, "_MEMO", heads.FeatureMemo())
    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4)
    formats: list[torch.memory_format] = []
    real_to = m.backbone.to

    def recording_to(*args, **kwargs):
        if "memory_format" in kwargs:
            formats.append(kwargs["memory_format"])
        return real_to(*args, **kwargs)

    monkeypatch.setattr(m.backbone, "to", recording_to)
    fps = {"n": 0}
    monkeypatch.setattr(heads, "backbone_fingerprint", _counted(heads.backbone_fingerprint, fps))
    fit_heads(m, _items(4, 0), _items(2, 1), epochs=1, train_keys=[f"t{i}" for i in range(4)],
              val_keys=[f"v{i}" for i in range(2)])
    assert formats == [torch.channels_last, torch.contiguous_format]
    assert fps["n"] == 1
    assert all(p.is_contiguous() for p in m.parameters())


def test_feature_memo_counts_its_bytes_as_it_goes_and_stops_when_full():
    memo = heads.FeatureMemo(max_bytes=3000)
    a, b = torch.zeros(1, 4, 8, 8, dtype=torch.float16), torch.zeros(1, 8, 4, 4, dtype=torch.float16)
    per = (a.numel() + b.numel()) * 2
    memo.put(("fp", "i0", False), a, b)
    assert memo.nbytes == per and len(memo) == 1 and not memo.full
    memo.put(("fp", "i0", False), a, b)  # replacing an entry does not count it twice
    assert memo.nbytes == per
    for i in range(1, 5):
        memo.put(("fp", f"i{i}", False), a, b)
    assert memo.nbytes == 5 * per and memo.full
    memo.clear()
    assert memo.nbytes == 0 and len(memo) == 0


def test_a_full_memo_stores_no_more_features(monkeypatch):
    monkeypatch.setattr(heads, "_MEMO", heads.FeatureMemo(max_bytes=1))
    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4)
    tr = _items(4, 0)
    fit_heads(m, tr, [], epochs=1, train_keys=[f"k{i}" for i in range(4)], flip=False)
    assert len(heads._MEMO) == 1  # the first image filled it


def test_finetune_top_trains_only_the_top_stage_and_prediction_matches_training():
    """LP-FT: after the heads, the stride-32 stage is fine-tuned from the cached stride-16
    maps; the lower stages and every batch-norm statistic are unchanged, the backbone is
    frozen again afterwards, and the whole model's forward gives the scores the stage
    validated with (the cached maps reproduce the backbone's own)."""
    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4, score="localization")
    top_names = {f"layer4.{k}" for k in m.backbone.top_stage().state_dict()}
    assert any("running_mean" in k for k in top_names)  # the stage has batch-norm statistics to keep
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    va = _items(6, 1)
    res = fit_heads(m, _items(12, 0), va, epochs=2, select="last", seed=0, finetune_top_epochs=2, finetune_top_lr=1e-2)
    assert res.epochs_run == 2 and res.top_epochs_run == 2 and res.seconds_top > 0
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert [bool(r.get("finetune_top")) for r in res.history] == [False, False, True, True]
    after = m.backbone.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and changed <= top_names
    assert not any("running_" in k for k in changed)  # batch-norm statistics kept
    assert not any(p.requires_grad for p in m.backbone.parameters())
    m.eval()
    with torch.no_grad():
        whole = torch.cat([m(torch.from_numpy(img)[None, None])["logit"] for img, _, _ in va]).numpy()
    feats = heads._features(m, va, flip=False, device="cpu", progress=None)
    cached, _ = heads._scores(m, feats, "cpu", top=m.backbone.top_stage())
    np.testing.assert_allclose(cached, whole, atol=2e-3)  # float16 cache
    assert res.best_val_auc == res.history[-1].get("val_auc")


def test_finetune_top_epochs_zero_leaves_the_backbone_and_negative_is_refused():
    from mammolens.errors import ConfigError

    torch.manual_seed(0)
    m = create_model("attention_tiny", pretrained="none", tiny_width=4)
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    res = fit_heads(m, _items(6, 0), _items(4, 1), epochs=1, finetune_top_epochs=0)
    assert res.top_epochs_run == 0 and all(torch.equal(v, before[k]) for k, v in m.backbone.state_dict().items())
    with pytest.raises(ConfigError, match="finetune_top_epochs"):
        fit_heads(m, _items(6, 0), _items(4, 1), epochs=1, finetune_top_epochs=-1)
