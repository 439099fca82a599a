"""A registry of model names (timm style): ``create_model(name, pretrained=..., **kw)``.

Names are ``{kind}_{arch}``: kinds ``attention`` (:class:`AttentionMammoNet`) and
``baseline`` (:class:`BaselineMammoNet`); archs ``resnet50``, ``resnet34``, ``resnet18``,
``tiny``, ``efficientnet_lite0|1|2`` and, built on demand, ``timm/<name>``
(``attention_timm/convnext_tiny``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from mammolens.errors import ConfigError
from mammolens.models.backbone import ARCHS, TIMM_PREFIX
from mammolens.models.net import AttentionMammoNet, BaselineMammoNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, fn: Callable[..., nn.Module]) -> None:
    _REGISTRY[name] = fn


for _arch in ARCHS:
    register_model(f"attention_{_arch}", lambda _a=_arch, **kw: AttentionMammoNet(_a, **kw))
    register_model(f"baseline_{_arch}", lambda _a=_arch, **kw: BaselineMammoNet(_a, **kw))


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(_REGISTRY)


def create_model(name: str, *, pretrained: str | Path = "none", **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name
        One of :func:`list_models` (e.g. ``attention_resnet50``).
    pretrained
        ``"none"``, ``"imagenet"`` (the architecture's entry in
        :data:`mammolens.models.weights.IMAGENET`, or timm's own; error if unavailable)
        or a local backbone state-dict path.
    **kwargs
        Passed to the model (``attention_dim``, ``score``, ``lse_r``, ``dropout``,
        ``tiny_width``, ``benign_output``). The baseline ignores the attention-only options.
    """
    kind, _, arch = name.partition("_")
    if name not in _REGISTRY and arch.startswith(TIMM_PREFIX) and len(arch) > len(TIMM_PREFIX):
        cls = {"attention": AttentionMammoNet, "baseline": BaselineMammoNet}.get(kind)
        if cls is not None:
            return cls(arch, pretrained=str(pretrained), **kwargs)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name](pretrained=str(pretrained), **kwargs)


def model_kwargs_from_config(cfg: Any) -> dict[str, Any]:
    """Model keyword arguments from a :class:`mammolens.config.ModelConfig`."""
    return {
        "attention_dim": cfg.attention_dim,
        "score": cfg.score,
        "lse_r": cfg.lse_r,
        "dropout": cfg.dropout,
        "tiny_width": cfg.tiny_width,
        "benign_output": bool(getattr(cfg, "benign_output", False)),
    }
