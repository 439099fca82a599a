"""Models: ResNet backbones for one-channel mammograms, gated attention pooling, a
lesion-localisation branch, and the plain global-average-pooling baseline.

>>> from mammolens.models import create_model
>>> m = create_model("attention_tiny")
>>> out = m(torch.rand(2, 1, 256, 208))   # doctest: +SKIP
>>> out["logit"].shape, out["attention"].shape, out["localization"].shape
"""

from mammolens.models.backbone import (
    GRAY_MEAN,
    GRAY_STD,
    PretrainedWeightsError,
    TimmBackbone,
    backbone_state_for_export,
    build_backbone,
    imagenet_cache_path,
)
from mammolens.models.net import AttentionMammoNet, BaselineMammoNet
from mammolens.models.pooling import GatedAttentionPool, lse_pool
from mammolens.models.registry import (
    create_model,
    list_models,
    model_kwargs_from_config,
    register_model,
)

__all__ = [
    "GRAY_MEAN",
    "GRAY_STD",
    "AttentionMammoNet",
    "BaselineMammoNet",
    "GatedAttentionPool",
    "PretrainedWeightsError",
    "TimmBackbone",
    "backbone_state_for_export",
    "build_backbone",
    "create_model",
    "imagenet_cache_path",
    "list_models",
    "lse_pool",
    "model_kwargs_from_config",
    "register_model",
]
