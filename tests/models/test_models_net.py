"""Models: registry, shapes, attention weights, gradient paths, pretrained weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from mammolens.errors import ConfigError
from mammolens.models import (
    PretrainedWeightsError,
    backbone_state_for_export,
    build_backbone,
    create_model,
    list_models,
    lse_pool,
)
from mammolens.train.losses import mammo_loss


def test_registry_lists_all_names():
    names = set(list_models())
    for kind in ("attention", "baseline"):
        for arch in ("resnet50", "resnet34", "resnet18", "tiny"):
            assert f"{kind}_{arch}" in names
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("attention_vgg16")


@pytest.mark.parametrize("name", ["attention_tiny", "baseline_tiny", "attention_resnet18"])
def test_output_shapes(name):
    m = create_model(name).eval()
    with torch.no_grad():
        out = m(torch.rand(3, 1, 128, 96))
    assert out["logit"].shape == (3,)
    assert out["attention"].shape == (3, 4, 3)
    assert out["localization"].shape == (3, 4, 3)
    assert torch.isfinite(out["logit"]).all()


def test_attention_sums_to_one_and_baseline_cam_matches_logit():
    m = create_model("attention_tiny").eval()
    with torch.no_grad():
        out = m(torch.rand(4, 1, 160, 128))
    s = out["attention"].sum(dim=(1, 2))
    assert torch.allclose(s, torch.ones(4), atol=1e-5)
    assert (out["attention"] >= 0).all()
    b = create_model("baseline_tiny").eval()
    with torch.no_grad():
        ob = b(torch.rand(2, 1, 160, 128))
    # GAP is linear: the mean of the CAM equals the logit
    assert torch.allclose(ob["localization"].mean(dim=(1, 2)), ob["logit"], atol=1e-4)
    assert torch.allclose(ob["attention"].sum(dim=(1, 2)), torch.ones(2))


def test_score_switch_ablation():
    torch.manual_seed(0)
    m = create_model("attention_tiny", score="attention+localization").eval()
    x = torch.rand(2, 1, 128, 96)
    with torch.no_grad():
        out = m(x)
    assert torch.allclose(out["logit"], 0.5 * (out["attention_logit"] + out["localization_logit"]))
    m.score = "localization"
    with torch.no_grad():
        assert torch.allclose(m(x)["logit"], out["localization_logit"])
    with pytest.raises(ValueError):
        create_model("attention_tiny", score="max")


def test_lse_pool_between_mean_and_max():
    s = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    assert lse_pool(s, 1e-4).item() == pytest.approx(1.5, abs=1e-3)
    assert lse_pool(s, 200.0).item() == pytest.approx(3.0, abs=0.01)


def _batch(with_mask: bool):
    x = torch.rand(2, 1, 128, 96)
    mask = torch.zeros(2, 128, 96, dtype=torch.long)
    if with_mask:
        mask[0, 40:70, 30:60] = 2
    return {
        "image": x,
        "label": torch.tensor([1.0, 0.0]),
        "mask": mask,
        "has_mask": torch.tensor([with_mask, with_mask]),
    }


@pytest.mark.parametrize("with_mask", [True, False])
def test_gradient_reaches_localisation_head(with_mask):
    torch.manual_seed(0)
    m = create_model("attention_tiny", score="attention")  # image logit independent of loc head
    b = _batch(with_mask)
    out = m(b["image"])
    loss, parts = mammo_loss(out, b, loc_weight=1.0, lse_r=m.lse_r)
    # the classification term alone gives no gradient to the loc head...
    m.zero_grad()
    parts["cls"].backward(retain_graph=True)
    assert m.loc_head.weight.grad is None or m.loc_head.weight.grad.abs().sum() == 0
    # ...the localisation term does, densely (masks) or weakly (labels only)
    m.zero_grad()
    parts["loc"].backward()
    g = m.loc_head.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert parts["n_dense"] == (2 if with_mask else 0)


def test_pretrained_none_local_file_and_strict_keys(tmp_path):
    src = build_backbone("resnet18", pretrained="none")
    sd = backbone_state_for_export(src)
    # a torchvision-style file with a 3-channel conv1 and an fc head
    sd3 = dict(sd)
    sd3["conv1.weight"] = sd["conv1.weight"].repeat(1, 3, 1, 1) / 3
    sd3["fc.weight"] = torch.zeros(1000, 512)
    sd3["fc.bias"] = torch.zeros(1000)
    f = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd3.items()}}, f)
    m = create_model("attention_resnet18", pretrained=str(f))
    assert torch.allclose(m.backbone.stem[0].conv1.weight, sd["conv1.weight"], atol=1e-6)
    assert torch.equal(m.backbone.layer4[0].conv1.weight, sd["layer4.0.conv1.weight"])
    # strict: a missing key is an error naming the file
    bad = dict(sd)
    bad.pop("layer2.0.bn1.weight")
    fb = tmp_path / "bad.pth"
    torch.save(bad, fb)
    with pytest.raises(PretrainedWeightsError, match="missing key"):
        create_model("attention_resnet18", pretrained=str(fb))
    # wrong architecture
    with pytest.raises(PretrainedWeightsError, match="do not match|shape mismatch"):
        create_model("attention_resnet50", pretrained=str(f))
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_model("attention_resnet18", pretrained=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(PretrainedWeightsError, match="cannot read"):
        create_model("attention_resnet18", pretrained=str(junk))


def test_imagenet_offline_raises_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError) as ei:
        create_model("attention_resnet18", pretrained="imagenet")
    msg = str(ei.value)
    assert "resnet18-" in msg and str(tmp_path / "torchhome") in msg
    assert "model.pretrained=PATH" in msg
    with pytest.raises(PretrainedWeightsError, match="no ImageNet weights"):
        create_model("attention_tiny", pretrained="imagenet")


def test_imagenet_from_torch_home_cache(tmp_path, monkeypatch):
    """A weights file already in $TORCH_HOME/hub/checkpoints is used without a download."""
    from mammolens.models import imagenet_cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = imagenet_cache_path("resnet18")
    target.parent.mkdir(parents=True)
    sd = backbone_state_for_export(build_backbone("resnet18"))
    sd["conv1.weight"] = torch.ones(64, 3, 7, 7)
    torch.save(sd, target)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    m = create_model("baseline_resnet18", pretrained="imagenet")
    assert torch.allclose(m.backbone.stem[0].conv1.weight, torch.full((64, 1, 7, 7), 3.0))


def test_balanced_dense_bce_weights_lesion_cells_equally():
    from mammolens.train.losses import balanced_dense_bce

    t = torch.zeros(1, 4, 4)
    t[0, 0, 0] = 1
    logits = torch.full((1, 4, 4), -5.0)  # all background: the lesion cell is missed
    missed = balanced_dense_bce(logits, t).item()
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, t).item()
    assert missed > 2 * plain  # the one lesion cell counts for half the loss
    empty = balanced_dense_bce(logits, torch.zeros(1, 4, 4)).item()
    assert empty == pytest.approx(torch.nn.functional.softplus(torch.tensor(-5.0)).item(), rel=1e-4)


@pytest.mark.parametrize("arch", ["tiny", "efficientnet_lite0", "timm/resnet10t"])
def test_top_stage_maps_the_stride16_map_to_the_stride32_map(arch):
    """``top_stage()`` is the backbone's own stride-16 -> 32 stage (ResNet layer4, timm's
    EfficientNet blocks, a timm module-list feature net), sharing its parameters."""
    torch.manual_seed(0)
    bb = build_backbone(arch, pretrained="none").eval()
    x = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        c3, c4 = bb(x)
        top = bb.top_stage()
        assert torch.allclose(top(c3), c4, atol=1e-6)
    own = {id(p) for p in bb.parameters()}
    assert {id(p) for p in top.parameters()} <= own and 0 < len(list(top.parameters())) < len(own)


def test_top_stage_of_an_unsplittable_timm_trunk_is_a_config_error():
    bb = build_backbone("efficientnet_lite0", pretrained="none")
    bb._module_names = ["conv_stem", "a", "b", "c", "head"]  # feature modules that are not `blocks.N`
    with pytest.raises(ConfigError, match="cannot split its stride-32 stage"):
        bb.top_stage()
