"""Tests for mammolens.train.ssl_pretrain (SimCLR on tiny synthetic images, a few seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mammolens.data.augment import view_augment  # noqa: E402
from mammolens.data.preprocess import breast_region  # noqa: E402
from mammolens.errors import ConfigError, LeakageError  # noqa: E402
from mammolens.models import build_backbone, create_model  # noqa: E402
from mammolens.train import ssl_pretrain as ssl  # noqa: E402
from mammolens.train.ssl_pretrain import (  # noqa: E402
    SimCLRNet,
    nt_xent,
    sample_unlabeled_patches,
    ssl_pretrain,
    ssl_pretrain_backbone,
)

torch.set_num_threads(1)
P = 32


def _breast(seed: int, size: tuple[int, int] = (112, 88)) -> np.ndarray:
    """A half-ellipse 'breast' against the left edge with blobby texture, black elsewhere."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) / (h / 2 - 3)) ** 2 + (xx / (w - 12)) ** 2 <= 1
    tex = np.zeros((h, w), np.float32)
    for _ in range(40):  # round 'glands' of random size and brightness: patches differ from each other
        cx, cy, r = rng.uniform(0, w - 12), rng.uniform(0, h), rng.uniform(1.5, 6)
        tex += rng.uniform(0.1, 0.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    img = np.where(inside, 0.3 + tex + 0.02 * rng.standard_normal((h, w)), 0.0)
    return np.clip(img, 0, 1).astype(np.float32)


def _cohort(n: int = 6) -> tuple[list[np.ndarray], list[str]]:
    return [_breast(i) for i in range(n)], [f"img{i:02d}" for i in range(n)]


def test_patches_lie_inside_the_breast_and_respect_exclude() -> None:
    imgs, ids = _cohort()
    held = {"img01", "img04"}
    patches, pid, xy = sample_unlabeled_patches(
        imgs, ids, patch_size=P, per_image=10, exclude=held, min_breast_fraction=0.7, seed=3, return_origins=True
    )
    assert patches.shape == (4 * 10, P, P) and patches.dtype == np.float32
    assert held.isdisjoint(pid.tolist())
    for patch, iid, (x0, y0) in zip(patches, pid, xy, strict=True):
        img = imgs[ids.index(iid)]
        assert 0 <= x0 <= img.shape[1] - P and 0 <= y0 <= img.shape[0] - P  # no padding
        np.testing.assert_array_equal(patch, img[y0 : y0 + P, x0 : x0 + P])
        assert breast_region(img)[y0 : y0 + P, x0 : x0 + P].mean() >= 0.7
    # distinct positions per image; deterministic for a seed, different for another
    assert len({(i, int(a), int(b)) for i, (a, b) in zip(pid, xy, strict=True)}) == len(pid)
    again = sample_unlabeled_patches(imgs, ids, patch_size=P, per_image=10, exclude=held, min_breast_fraction=0.7, seed=3)
    np.testing.assert_array_equal(again[0], patches)
    other = sample_unlabeled_patches(imgs, ids, patch_size=P, per_image=10, exclude=held, min_breast_fraction=0.7, seed=4)
    assert not np.array_equal(other[0], patches)
    # an all-black image or one smaller than the patch gives nothing
    none, nid = sample_unlabeled_patches([np.zeros((80, 80), np.float32), imgs[0][:20, :20]], ["a", "b"], patch_size=P)
    assert none.shape == (0, P, P) and nid.size == 0


def test_nt_xent_matches_the_formula_on_two_pairs() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[3.0, 1.0], [-1.0, 1.0]])
    t = 0.5
    loss, acc = nt_xent(z1, z2, temperature=t)
    u = [v / np.linalg.norm(v) for v in np.concatenate([z1.numpy(), z2.numpy()]).astype(float)]
    pos = {0: 2, 1: 3, 2: 0, 3: 1}
    want, hits = 0.0, 0
    for i in range(4):
        s = {k: float(u[i] @ u[k]) / t for k in range(4) if k != i}
        want += -(s[pos[i]] - math.log(sum(math.exp(v) for v in s.values())))
        hits += max(s, key=s.get) == pos[i]
    assert float(loss) == pytest.approx(want / 4, rel=1e-5)
    assert float(acc) == pytest.approx(hits / 4)
    # identical views score much better than unrelated ones
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    same, acc_same = nt_xent(a, a.clone(), temperature=0.2)
    rand, _ = nt_xent(a, b, temperature=0.2)
    assert float(same) < float(rand) - 1.0 and float(acc_same) == 1.0
    with pytest.raises(ConfigError):
        nt_xent(a, b, temperature=0.0)
    with pytest.raises(ConfigError):
        nt_xent(a[:1], b[:1])


def test_views_stay_in_range_and_are_deterministic() -> None:
    imgs, ids = _cohort(2)
    x = torch.from_numpy(sample_unlabeled_patches(imgs, ids, patch_size=P, per_image=8)[0]).unsqueeze(1)
    views = view_augment()
    v, _ = views(x, generator=torch.Generator().manual_seed(1))
    assert v.shape == x.shape and float(v.min()) >= 0 and float(v.max()) <= 1
    torch.testing.assert_close(v, views(x, generator=torch.Generator().manual_seed(1))[0])
    assert not torch.equal(v, x)
    # with no crop, jitter, blur or noise only the dihedral element is left: pixels are permuted
    bare_views = view_augment(min_scale=1.0, jitter_p=0.0, blur_p=0.0, noise_p=0.0)
    bare, _ = bare_views(x, generator=torch.Generator().manual_seed(2))
    for a, b in zip(x[:, 0], bare[:, 0], strict=True):
        torch.testing.assert_close(torch.sort(a.flatten())[0], torch.sort(b.flatten())[0], atol=1e-5, rtol=0)


def test_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    imgs, ids = _cohort(4)
    x = torch.from_numpy(sample_unlabeled_patches(imgs, ids, patch_size=P, per_image=8)[0]).unsqueeze(1)
    g = torch.Generator().manual_seed(0)
    views = view_augment()
    (v1, _), (v2, _) = views(x, generator=g), views(x, generator=g)
    torch.manual_seed(0)
    net = SimCLRNet.build(build_backbone("tiny", tiny_width=4))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        z = net(torch.cat([v1, v2]))
        loss, _ = nt_xent(z[: len(x)], z[len(x) :], temperature=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_training_improves_retrieval_and_weights_load_into_the_model(tmp_path) -> None:
    imgs, ids = _cohort(6)
    out = tmp_path / "ssl_tiny.pt"
    seen = []
    res = ssl_pretrain(
        imgs, ids, out, arch="tiny", tiny_width=8, exclude={"img05"}, patch_size=P, per_image=16,
        epochs=24, batch_size=40, lr=3e-3, seed=0, progress=seen.append,
    )
    assert len(res.history) == 24 and seen == res.history and res.n_images == 5 and res.n_patches == 80
    first = res.history[0]
    loss = [h["loss"] for h in res.history]
    acc = [h["accuracy"] for h in res.history]
    # loss starts near log(2B - 1) (random embeddings) and falls; the positive view is
    # retrieved several times more often than by chance (1 / 79)
    assert first["loss"] == pytest.approx(math.log(2 * 40 - 1), abs=0.4)
    assert np.mean(loss[-4:]) < np.mean(loss[:2]) - 0.3
    assert np.mean(acc[-4:]) > 4 * first["chance"]
    blob = torch.load(out, map_location="cpu", weights_only=True)
    assert "patch_head" not in blob and blob["meta"]["method"] == "simclr"
    trained = res.model.backbone.state_dict()
    model = create_model("attention_tiny", pretrained=str(out), tiny_width=8)
    assert not model.loc_head_from_patch  # the localisation head keeps its default init
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(trained)
    for k, v in trained.items():
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)
    bb = build_backbone("tiny", pretrained=str(out), tiny_width=8)
    torch.testing.assert_close(bb.layer4[0].conv2.weight, trained["layer4.0.conv2.weight"], rtol=0, atol=0)
    # deterministic for a seed: same history and same weights
    runs = [
        ssl_pretrain(imgs, ids, tmp_path / f"r{i}.pt", arch="tiny", tiny_width=4, patch_size=P, per_image=8, epochs=2, batch_size=16, seed=5)
        for i in range(2)
    ]
    assert runs[0].history[-1]["loss"] == runs[1].history[-1]["loss"]
    a, b = (torch.load(r.path, weights_only=True)["state_dict"] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_leaked_held_out_patch_raises(tmp_path, monkeypatch) -> None:
    imgs, ids = _cohort(3)
    real = ssl._PatchSampler.draw

    def leaky(self, rng):  # a sampler bug that lets a held-out image through
        patches, pid, xy = real(self, rng)
        pid[0] = "img02"
        return patches, pid, xy

    monkeypatch.setattr(ssl._PatchSampler, "draw", leaky)
    with pytest.raises(LeakageError):
        ssl_pretrain(imgs, ids, tmp_path / "x.pt", arch="tiny", tiny_width=4, exclude={"img02"}, patch_size=P, per_image=4, epochs=1)
    assert not (tmp_path / "x.pt").exists()


def test_bad_inputs_raise_config_error(tmp_path) -> None:
    imgs, ids = _cohort(2)
    bb = build_backbone("tiny", tiny_width=4)
    good = sample_unlabeled_patches(imgs, ids, patch_size=P, per_image=4)[0]
    bad_calls = [
        lambda: sample_unlabeled_patches(imgs, ids, patch_size=8),
        lambda: sample_unlabeled_patches(imgs, ids, per_image=0),
        lambda: sample_unlabeled_patches(imgs, ids[:1]),
        lambda: sample_unlabeled_patches(imgs, ["a", "a"]),
        lambda: sample_unlabeled_patches(imgs, ids, min_breast_fraction=0.0),
        lambda: sample_unlabeled_patches([np.zeros((2, 40, 40), np.float32)], ["a"], patch_size=P),
        lambda: ssl_pretrain_backbone(bb, good[:1]),
        lambda: ssl_pretrain_backbone(bb, good[:, :, :20]),
        lambda: ssl_pretrain_backbone(bb, good, temperature=0),
        lambda: ssl_pretrain_backbone(bb, good, batch_size=1),
        lambda: ssl_pretrain_backbone(bb, good, epochs=0),
        lambda: ssl_pretrain_backbone(torch.nn.Identity(), good),  # no out_channels
        # every image held out or blank: no patch at all
        lambda: ssl_pretrain(imgs, ids, tmp_path / "a.pt", arch="tiny", tiny_width=4, exclude=ids, patch_size=P),
        lambda: ssl_pretrain([np.zeros((64, 64), np.float32)], ["z"], tmp_path / "b.pt", arch="tiny", patch_size=P),
        lambda: ssl_pretrain(imgs, ids, tmp_path / "c.pt", arch="nope", patch_size=P),
    ]
    for i, call in enumerate(bad_calls):
        with pytest.raises(ConfigError):
            call()
            pytest.fail(f"bad call {i} did not raise")


def test_simclr_takes_the_breast_mask_from_the_pixel_layer_not_the_patch_stage():
    """One owner of the breast mask of a preprocessed image (mammolens.data.preprocess):
    SimCLR does not reach into the patch-classifier module for it."""
    import ast
    import inspect

    from mammolens.train import patch_pretrain

    tree = ast.parse(inspect.getsource(ssl))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "mammolens.train.patch_pretrain" not in imported
    assert "mammolens.data.preprocess" in imported
    assert patch_pretrain.breast_region is breast_region  # the patch sampler uses the same one
