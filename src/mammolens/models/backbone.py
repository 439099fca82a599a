"""ResNet backbones for single-channel mammograms, with pretrained weights kept apart.

Grayscale input
---------------
A mammogram has one channel. Rather than replicating it three times (three times the
first-layer memory traffic for the same result), the first convolution is given one
input channel and, when ImageNet weights are loaded, its filters are the **sum of the
pretrained RGB filters** (as ``timm.models.adapt_input_conv`` does). For a gray image fed
as ``(x, x, x)`` this gives exactly the same activations as the RGB network. The input is
normalised with the gray mean/std of ImageNet (0.449, 0.226), see :data:`GRAY_MEAN`.

Pretrained weights (``pretrained=``)
------------------------------------
* ``"none"``: random initialisation (Kaiming, torchvision defaults).
* ``"imagenet"``: torchvision's weights API (``ResNet50_Weights.IMAGENET1K_V2`` ...),
  cached under ``$TORCH_HOME/hub/checkpoints``. If the file is not cached and cannot be
  downloaded, :class:`PretrainedWeightsError` says which file to put where; there is no
  silent fall-back to random weights.
* a path: a local state-dict file (``torch.save(model.state_dict())`` of a torchvision
  ResNet, optionally wrapped in ``{"state_dict": ...}`` and/or prefixed ``backbone.`` /
  ``model.`` / ``module.``). Keys are checked strictly (``fc.*`` is ignored); a 3-channel
  ``conv1`` is summed to one channel.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mammolens.errors import ConfigError

GRAY_MEAN = 0.449
GRAY_STD = 0.226

#: arch -> (torchvision builder name, weights enum name, final feature channels)
RESNETS: dict[str, tuple[str, str, int]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", 512),
    "resnet34": ("resnet34", "ResNet34_Weights", 512),
    "resnet50": ("resnet50", "ResNet50_Weights", 2048),
}
ARCHS = (*RESNETS, "tiny")


class PretrainedWeightsError(ConfigError):
    """Pretrained weights asked for but not available or not matching the architecture."""


class Backbone(nn.Module):
    """A ResNet trunk: ``stem -> layer1..layer4``; returns the layer3 and layer4 maps.

    Attributes
    ----------
    out_channels : int
        Channels of the layer4 map (stride 32).
    mid_channels : int
        Channels of the layer3 map (stride 16).
    """

    def __init__(self, stem: nn.Module, layers: list[nn.Module], out_channels: int, mid_channels: int, arch: str) -> None:
        super().__init__()
        self.stem = stem
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels = out_channels
        self.mid_channels = mid_channels
        self.arch = arch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = self.layer2(self.layer1(x))
        c3 = self.layer3(x)
        c4 = self.layer4(c3)
        return c3, c4


def _torchvision_resnet(arch: str) -> nn.Module:
    import torchvision

    builder, _, _ = RESNETS[arch]
    return getattr(torchvision.models, builder)(weights=None)


def _stem_from(net: nn.Module) -> nn.Sequential:
    conv = net.conv1
    gray = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    return nn.Sequential(
        _Named(conv1=gray, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool),
    )


class _Named(nn.Module):
    """A sequential container whose children keep torchvision's names (conv1, bn1...)."""

    def __init__(self, **mods: nn.Module) -> None:
        super().__init__()
        for k, m in mods.items():
            self.add_module(k, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.children():
            x = m(x)
        return x


def build_backbone(arch: str, *, pretrained: str | Path = "none", tiny_width: int = 16) -> Backbone:
    """Build a one-channel ResNet trunk and load its pretrained weights.

    Parameters
    ----------
    arch
        ``resnet50``, ``resnet34``, ``resnet18`` or ``tiny`` (BasicBlock, one block per
        stage, widths ``w, 2w, 4w, 8w`` with ``w = tiny_width``).
    pretrained
        ``"none"``, ``"imagenet"`` or the path of a local state-dict file.
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
    if arch == "tiny":
        bb = _tiny_backbone(tiny_width)
    else:
        net = _torchvision_resnet(arch)
        ch = RESNETS[arch][2]
        bb = Backbone(_stem_from(net), [net.layer1, net.layer2, net.layer3, net.layer4], ch, ch // 2, arch)
    load_pretrained(bb, pretrained)
    return bb


def _tiny_backbone(w: int) -> Backbone:
    from torchvision.models.resnet import BasicBlock

    def stage(cin: int, cout: int, stride: int) -> nn.Module:
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        return nn.Sequential(BasicBlock(cin, cout, stride, down))

    stem = nn.Sequential(
        _Named(
            conv1=nn.Conv2d(1, w, 7, 2, 3, bias=False),
            bn1=nn.BatchNorm2d(w),
            relu=nn.ReLU(inplace=True),
            maxpool=nn.MaxPool2d(3, 2, 1),
        )
    )
    layers = [stage(w, w, 1), stage(w, 2 * w, 2), stage(2 * w, 4 * w, 2), stage(4 * w, 8 * w, 2)]
    bb = Backbone(stem, layers, 8 * w, 4 * w, "tiny")
    for m in bb.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return bb


# -- pretrained weights -------------------------------------------------------------


def imagenet_weights(arch: str):  # -> torchvision WeightsEnum member
    """The torchvision weights object used for ``pretrained="imagenet"``."""
    import torchvision

    if arch not in RESNETS:
        raise PretrainedWeightsError(f"no ImageNet weights exist for backbone {arch!r}; use pretrained='none' or a local file")
    enum = getattr(torchvision.models, RESNETS[arch][1])
    return enum.IMAGENET1K_V2 if hasattr(enum, "IMAGENET1K_V2") else enum.IMAGENET1K_V1


def imagenet_cache_path(arch: str) -> Path:
    """Where torchvision looks for (and stores) the ImageNet weights file."""
    url = imagenet_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _fetch_imagenet(arch: str) -> dict[str, torch.Tensor]:
    w = imagenet_weights(arch)
    target = imagenet_cache_path(arch)
    try:
        return w.get_state_dict(progress=False, check_hash=False)
    except Exception as e:  # noqa: BLE001 - offline, proxy, truncated file...: all reported the same way
        raise PretrainedWeightsError(
            f"ImageNet weights for {arch} are not cached and could not be downloaded "
            f"({type(e).__name__}: {e}). Put the file {os.path.basename(w.url)} (from {w.url}) at "
            f"{target} (set TORCH_HOME to choose the cache folder), or pass a local state-dict "
            f"with --set model.pretrained=PATH, or train from scratch with --set model.pretrained=none."
        ) from None


_PREFIXES = ("module.", "model.", "backbone.", "net.")


def _unwrap(sd: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        key = k
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p) :], True
        out[key] = v
    return out


def _to_torchvision_names(bb: Backbone) -> dict[str, str]:
    """Map our parameter names to torchvision ResNet names (stem.0.conv1.weight -> conv1.weight)."""
    names = {}
    for k in bb.state_dict():
        names[k] = k.replace("stem.0.", "", 1) if k.startswith("stem.0.") else k
    return names


def load_pretrained(bb: Backbone, pretrained: str | Path) -> None:
    """Load ``pretrained`` (``none`` / ``imagenet`` / path) into ``bb`` in place."""
    spec = str(pretrained).strip()
    if spec.lower() in ("none", "", "false", "scratch"):
        return
    if spec.lower() == "imagenet":
        sd = _fetch_imagenet(bb.arch)
        where = f"ImageNet weights for {bb.arch}"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"{path}: pretrained weights file not found (pretrained must be 'none', 'imagenet' or a state-dict path)"
            )
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise PretrainedWeightsError(f"{path}: cannot read pretrained weights ({type(e).__name__}: {e})") from None
        sd = _unwrap(raw, path)
        where = str(path)
    _load_state(bb, sd, where)


def _load_state(bb: Backbone, sd: dict[str, torch.Tensor], where: str) -> None:
    names = _to_torchvision_names(bb)
    own = bb.state_dict()
    theirs = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    # accept our own naming too (a saved Backbone)
    if any(k.startswith("stem.0.") for k in theirs):
        theirs = {names.get(k, k): v for k, v in theirs.items()}
    wanted = {tv: ours for ours, tv in names.items()}
    missing = sorted(set(wanted) - set(theirs))
    unexpected = sorted(set(theirs) - set(wanted))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[:4]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:4]}")
        raise PretrainedWeightsError(f"{where}: weights do not match backbone {bb.arch}: " + "; ".join(parts))
    new: dict[str, torch.Tensor] = {}
    for tv, ours in wanted.items():
        t = theirs[tv]
        target = own[ours]
        if tv == "conv1.weight" and t.ndim == 4 and t.shape[1] == 3 and target.shape[1] == 1:
            t = t.sum(dim=1, keepdim=True)  # grayscale: sum of the RGB filters
        if t.shape != target.shape:
            raise PretrainedWeightsError(
                f"{where}: shape mismatch for {tv}: file has {tuple(t.shape)}, backbone {bb.arch} needs {tuple(target.shape)}"
            )
        new[ours] = t.to(target.dtype)
    bb.load_state_dict(new, strict=True)


def backbone_state_for_export(bb: Backbone) -> dict[str, torch.Tensor]:
    """The backbone's weights with torchvision key names (loadable with ``pretrained=PATH``)."""
    names = _to_torchvision_names(bb)
    return {names[k]: v for k, v in bb.state_dict().items()}


Builder = Callable[..., Backbone]
