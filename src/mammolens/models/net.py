"""The attention model with a lesion-localisation branch, and the plain baseline.

Both models take ``(B, 1, H, W)`` images in [0, 1] and return a dict::

    logit         (B,)       image malignancy logit (probability = sigmoid)
    attention     (B, h, w)  pooling weights (sum to 1 per image; uniform for the baseline)
    localization  (B, h, w)  dense malignancy logits (the baseline: its class activation
                             map, Zhou et al. CVPR 2016, i.e. the FC weights applied at
                             every location, so both models are evaluated alike)

``h, w = ceil(H/32), ceil(W/32)`` (the layer4 grid). Structured like timm models:
``forward_features`` returns the feature maps, ``forward_head`` the outputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mammolens.models.backbone import GRAY_MEAN, GRAY_STD, Backbone, build_backbone
from mammolens.models.pooling import GatedAttentionPool, lse_pool


class _MammoNet(nn.Module):
    kind = "?"

    def __init__(self, arch: str, *, pretrained: str = "none", tiny_width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.arch = arch
        self.backbone: Backbone = build_backbone(arch, pretrained=pretrained, tiny_width=tiny_width)
        self.num_features = self.backbone.out_channels
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.register_buffer("mean", torch.tensor(GRAY_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(GRAY_STD), persistent=False)

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.arch}"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone maps: ``c3`` (stride 16) and ``c4`` (stride 32)."""
        c3, c4 = self.backbone(self.normalize(x))
        return {"c3": c3, "c4": c4}

    def forward_head(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    def gradcam_layer(self) -> nn.Module:
        """The layer Grad-CAM reads (the last block of layer4)."""
        return self.backbone.layer4[-1]

    def extra_repr(self) -> str:
        return f"name={self.name}"


class AttentionMammoNet(_MammoNet):
    """ResNet trunk + gated attention pooling + a localisation head.

    Parameters
    ----------
    arch
        Backbone name (``resnet50``, ``resnet34``, ``resnet18``, ``tiny``).
    pretrained
        ``"none"``, ``"imagenet"`` or a local state-dict path (backbone only).
    attention_dim
        Hidden size of the gated attention network.
    score
        Image logit: ``"attention"``, ``"localization"`` (LSE-pooled map) or
        ``"attention+localization"`` (the mean of both): the ablation switch.
    lse_r
        Sharpness of the LSE pooling of the localisation map.

    Notes
    -----
    The localisation head is a 1x1 convolution over the concatenation of layer4 and
    (average-pooled to the same grid) layer3 features, giving a per-location malignancy
    logit on the layer4 grid. It is trained densely with lesion masks and weakly (LSE
    pooled, image label) otherwise; see :func:`mammolens.train.losses.mammo_loss`.
    """

    kind = "attention"

    def __init__(
        self,
        arch: str = "resnet50",
        *,
        pretrained: str = "none",
        attention_dim: int = 128,
        score: str = "attention",
        lse_r: float = 5.0,
        dropout: float = 0.0,
        tiny_width: int = 16,
    ) -> None:
        super().__init__(arch, pretrained=pretrained, tiny_width=tiny_width, dropout=dropout)
        if score not in ("attention", "localization", "attention+localization"):
            raise ValueError(f"score must be attention, localization or attention+localization, got {score!r}")
        self.score = score
        self.lse_r = float(lse_r)
        c = self.num_features
        self.attention_pool = GatedAttentionPool(c, attention_dim)
        self.classifier = nn.Linear(c, 1)
        self.loc_head = nn.Conv2d(c + self.backbone.mid_channels, 1, 1)
        nn.init.zeros_(self.loc_head.bias)

    def localization_logits(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        c3, c4 = feats["c3"], feats["c4"]
        c3d = F.adaptive_avg_pool2d(c3, c4.shape[-2:])
        return self.loc_head(torch.cat([c4, c3d], dim=1)).squeeze(1)

    def forward_head(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c4 = feats["c4"]
        z, att = self.attention_pool(c4)
        att_logit = self.classifier(self.drop(z)).squeeze(1).float()
        loc = self.localization_logits(feats).float()
        loc_logit = lse_pool(loc, self.lse_r)
        if self.score == "attention":
            logit = att_logit
        elif self.score == "localization":
            logit = loc_logit
        else:
            logit = 0.5 * (att_logit + loc_logit)
        return {
            "logit": logit,
            "attention": att,
            "localization": loc,
            "attention_logit": att_logit,
            "localization_logit": loc_logit,
        }


class BaselineMammoNet(_MammoNet):
    """The same trunk with global average pooling + a linear classifier (the ablation)."""

    kind = "baseline"

    def __init__(self, arch: str = "resnet50", *, pretrained: str = "none", dropout: float = 0.0, tiny_width: int = 16, **_: Any) -> None:
        super().__init__(arch, pretrained=pretrained, tiny_width=tiny_width, dropout=dropout)
        self.classifier = nn.Linear(self.num_features, 1)

    def forward_head(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c4 = feats["c4"]
        b, _, h, w = c4.shape
        logit = self.classifier(self.drop(c4.mean(dim=(2, 3)))).squeeze(1).float()
        # CAM: the classifier applied at each location; its mean equals the logit
        cam = (torch.einsum("bchw,c->bhw", c4, self.classifier.weight[0].to(c4.dtype)) + self.classifier.bias[0]).float()
        att = torch.full((b, h, w), 1.0 / (h * w), device=c4.device, dtype=torch.float32)
        return {"logit": logit, "attention": att, "localization": cam}
