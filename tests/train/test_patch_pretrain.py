"""Tests for mammolens.train.patch_pretrain (tiny synthetic images, a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mammolens.data.preprocess import breast_region  # noqa: E402
from mammolens.errors import ConfigError  # noqa: E402
from mammolens.train.patch_pretrain import (  # noqa: E402
    PATCH_BACKGROUND,
    PATCH_BENIGN,
    PATCH_MALIGNANT,
    patch_pretrain,
    patch_pretrain_backbone,
    sample_patches,
)


def _phantom(seed: int, lesion: int | None, size: tuple[int, int] = (96, 80)) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A half-disc 'breast' against the left edge, optionally with one bright round lesion."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    breast = ((yy - h / 2) / (h / 2 - 2)) ** 2 + (xx / (w - 10)) ** 2 <= 1
    img = np.where(breast, 0.35 + 0.05 * rng.standard_normal((h, w)), 0.0).astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    c = (int(rng.integers(20, 35)), int(rng.integers(35, 60)))  # (x, y)
    if lesion is not None:
        disc = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= 6**2
        img[disc] = 0.9 if lesion == 2 else 0.65
        mask[disc] = lesion
    return np.clip(img, 0, 1), mask, c


def _cohort(n: int = 12) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[tuple[int, int]]]:
    imgs, masks, ids, cents = [], [], [], []
    for i in range(n):
        im, m, c = _phantom(i, [None, 1, 2][i % 3])
        imgs.append(im)
        masks.append(m)
        ids.append(f"img{i:02d}")
        cents.append(c)
    return imgs, masks, ids, cents


def test_lesion_patches_are_centred_on_lesions_and_background_inside_breast() -> None:
    imgs, masks, ids, cents = _cohort()
    ps = sample_patches(imgs, masks, ids, patch_size=24, per_lesion=5, background_per_image=4, seed=1)
    assert ps.patches.shape[1:] == (24, 24)
    for y, iid, (x, yc) in zip(ps.labels, ps.image_ids, ps.centers, strict=True):
        i = ids.index(iid)
        if y == PATCH_BACKGROUND:
            region = breast_region(imgs[i])
            assert region[int(yc), int(x)], "background patch centre outside the breast"
            # no lesion pixel inside a background patch
            y0, x0 = int(round(yc - 12)), int(round(x - 12))
            assert masks[i][max(0, y0) : y0 + 24, max(0, x0) : x0 + 24].max() == 0
        else:
            cx, cy = cents[i]
            assert (x - cx) ** 2 + (yc - cy) ** 2 <= 6**2 + 1e-6  # within the lesion
            assert y == (PATCH_MALIGNANT if masks[i].max() == 2 else PATCH_BENIGN)
    counts = ps.counts()
    assert counts["benign"] == 4 * 5 and counts["malignant"] == 4 * 5
    assert counts["background"] == 12 * 4


def test_no_patch_from_held_out_images_and_two_classes() -> None:
    imgs, masks, ids, _ = _cohort()
    held = {"img01", "img02", "img05"}
    ps = sample_patches(imgs, masks, ids, patch_size=16, classes=2, exclude=held)
    assert held.isdisjoint(set(ps.image_ids.tolist()))
    assert set(ps.labels.tolist()) == {0, 1}
    # sampling is deterministic for a seed
    ps2 = sample_patches(imgs, masks, ids, patch_size=16, classes=2, exclude=held)
    np.testing.assert_array_equal(ps.centers, ps2.centers)


def test_bad_inputs_are_rejected() -> None:
    imgs, masks, ids, _ = _cohort(3)
    with pytest.raises(ConfigError):
        sample_patches(imgs, masks[:2], ids)
    with pytest.raises(ConfigError):
        sample_patches(imgs, masks, ids, classes=4)
    with pytest.raises(ConfigError):
        sample_patches([imgs[0]], [masks[0][:10]], ids[:1])


def test_training_reduces_loss_and_weights_load_into_model(tmp_path) -> None:
    from mammolens.models import build_backbone, create_model

    imgs, masks, ids, _ = _cohort(12)
    ps = sample_patches(imgs, masks, ids, patch_size=32, per_lesion=8, background_per_image=6, seed=0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bb = build_backbone("tiny", tiny_width=8)
        res = patch_pretrain_backbone(bb, ps, epochs=3, batch_size=32, lr=3e-3, augment=False, seed=0)
    finally:
        torch.set_num_threads(threads)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0] * 0.8, losses
    assert res.history[-1]["accuracy"] > 0.8

    out = tmp_path / "w.pt"
    r = patch_pretrain(imgs, masks, ids, out, arch="tiny", tiny_width=8, patch_size=32, epochs=1, max_steps=2, exclude=["img00"])
    assert out.is_file() and r.path == str(out) and r.n_patches > 0
    model = create_model("attention_tiny", pretrained=out, tiny_width=8)
    saved = torch.load(out, weights_only=True)["state_dict"]
    got = model.backbone.state_dict()
    assert torch.equal(got["stem.0.conv1.weight"], saved["conv1.weight"])
    assert torch.equal(got["layer4.0.conv2.weight"], saved["layer4.0.conv2.weight"])
    base = create_model("baseline_tiny", pretrained=out, tiny_width=8)
    assert torch.equal(base.backbone.state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])


def test_empty_patch_set_is_an_error() -> None:
    from mammolens.models import build_backbone

    imgs, masks, ids, _ = _cohort(3)
    ps = sample_patches(imgs, masks, ids, exclude=ids)
    assert len(ps) == 0
    with pytest.raises(ConfigError):
        patch_pretrain_backbone(build_backbone("tiny", tiny_width=4), ps)


@pytest.mark.parametrize("classes", [2, 3])
def test_localisation_head_starts_as_the_patch_detector(tmp_path, classes: int) -> None:
    """The saved patch head initialises the attention model's localisation head, so its
    map at initialisation is the patch classifier's (last class - background) logit per cell."""
    from mammolens.models import create_model

    imgs, masks, ids, _ = _cohort(9)
    out = tmp_path / "w.pt"
    res = patch_pretrain(imgs, masks, ids, out, arch="tiny", tiny_width=8, patch_size=32, classes=classes,
                         epochs=1, max_steps=3, seed=0)
    blob = torch.load(out, weights_only=True)
    w, b = blob["patch_head"]["weight"], blob["patch_head"]["bias"]
    assert w.shape == (classes, 8 * 8)  # tiny backbone: 8 * width channels
    model = create_model("attention_tiny", pretrained=out, tiny_width=8).eval()
    assert model.loc_head_from_patch
    x = torch.from_numpy(np.stack(imgs[:2]))[:, None]
    with torch.no_grad():
        feats = model.forward_features(x)
        loc = model(x)["localization"]
        lg = torch.einsum("bchw,kc->bkhw", feats["c4"], w) + b[None, :, None, None]
    torch.testing.assert_close(loc, lg[:, -1] - lg[:, 0], rtol=1e-4, atol=1e-4)
    # the patch classifier itself gives the same numbers on the pooled features
    net = res.classifier.eval()
    with torch.no_grad():
        direct = net(x)
    pooled = lg.mean(dim=(2, 3))
    torch.testing.assert_close(direct, pooled, rtol=1e-4, atol=1e-4)
    # a plain backbone file (no head) leaves the head at its default initialisation
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": blob["state_dict"]}, plain)
    assert not create_model("attention_tiny", pretrained=plain, tiny_width=8).loc_head_from_patch
    assert not create_model("attention_tiny", tiny_width=8).loc_head_from_patch


def test_same_seed_same_weights(tmp_path) -> None:
    """The backbone's random initial weights are seeded too: a rerun repeats exactly."""
    imgs, masks, ids, _ = _cohort(6)
    outs = []
    for name in ("a.pt", "b.pt"):
        torch.manual_seed(int(name[0] == "a") * 123)  # different global state before each call
        patch_pretrain(imgs, masks, ids, tmp_path / name, arch="tiny", tiny_width=4, patch_size=24, epochs=1, max_steps=2, seed=7)
        outs.append(torch.load(tmp_path / name, weights_only=True)["state_dict"])
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
