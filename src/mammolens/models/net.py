"""The attention model with a lesion-localisation branch, and the plain baseline.

Both models take ``(B, 1, H, W)`` images in [0, 1] and return a dict::

    logit         (B,)       image malignancy logit (probability = sigmoid)
    attention     (B, h, w)  pooling weights (sum to 1 per image; uniform for the baseline)
    localization  (B, h, w)  dense malignancy logits (the baseline: its class activation
                             map, Zhou et al. CVPR 2016, i.e. the FC weights applied at
                             every location, so both models are evaluated alike)
    benign_logit  (B,)       only with ``benign_output=True``: image logit of a benign
                             finding (independent of the malignant one, as the NYU / GMIC
                             models' benign and malignant outputs)

``h, w = ceil(H/32), ceil(W/32)`` (the layer4 grid). Structured like timm models:
``forward_features`` returns the feature maps, ``forward_head`` the outputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mammolens.models.backbone import build_backbone
from mammolens.models.pooling import GatedAttentionPool, lse_pool
from mammolens.models.weights import WeightsFile, is_imagenet, is_none, read_weights_file


class _MammoNet(nn.Module):
    kind = "?"

    def __init__(
        self, arch: str, *, pretrained: str | WeightsFile = "none", tiny_width: int = 16, dropout: float = 0.0,
        benign_output: bool = False,
    ) -> None:
        super().__init__()
        self.arch = arch
        #: whether the model has the benign output (``benign_logit``)
        self.benign_output = bool(benign_output)
        self.backbone = build_backbone(arch, pretrained=pretrained, tiny_width=tiny_width)
        self.num_features = self.backbone.out_channels
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.register_buffer("mean", torch.tensor(float(self.backbone.input_mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(self.backbone.input_std)), persistent=False)

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
        """The layer Grad-CAM reads (the last block of the stride-32 stage)."""
        return self.backbone.gradcam_layer()

    def extra_repr(self) -> str:
        return f"name={self.name}"


def read_weights_spec(pretrained: str | WeightsFile) -> WeightsFile | None:
    """The weights file ``pretrained`` names, read once (``None`` for ``"none"`` / ``"imagenet"``)."""
    if isinstance(pretrained, WeightsFile):
        return pretrained
    return None if is_none(pretrained) or is_imagenet(pretrained) else read_weights_file(pretrained)


def init_loc_head_from_patch(loc_head: nn.Conv2d, weights: WeightsFile | None, channels: int) -> bool:
    """Start the localisation head as the patch classifier saved with the backbone weights.

    A weights file from :func:`mammolens.train.patch_pretrain.patch_pretrain` carries the
    patch classifier's linear layer (``patch_head``: background, [benign,] malignant or
    lesion). Its last-class-minus-background logit, applied to every stride-32 cell, is a
    sliding-window patch detector; copying it into the 1x1 localisation head (stride-16
    inputs at zero) makes the whole-image model start from that detector, the
    patch-to-image transfer of Shen et al. (2019). Returns whether it did; a head whose
    shape does not fit the backbone is an error (the file was made for another backbone).
    """
    head = None if weights is None else weights.patch_head
    if head is None:
        return False
    w, b = head["weight"], head["bias"]
    if w.ndim != 2 or w.shape[1] != channels or w.shape[0] < 2:
        from mammolens.models.weights import PretrainedWeightsError

        raise PretrainedWeightsError(
            f"{weights.path}: patch_head has shape {tuple(w.shape)}; this backbone needs (classes >= 2, {channels})"
        )
    with torch.no_grad():
        loc_head.weight.zero_()
        loc_head.weight[0, :channels, 0, 0] = (w[-1] - w[0]).to(loc_head.weight.dtype)
        loc_head.bias.fill_(float(b[-1] - b[0]))
    return True


class AttentionMammoNet(_MammoNet):
    """ResNet trunk + gated attention pooling + a localisation head.

    Parameters
    ----------
    arch
        Backbone name (see :func:`mammolens.models.backbone.build_backbone`).
    pretrained
        ``"none"``, ``"imagenet"`` or a local state-dict path (backbone only).
    attention_dim
        Hidden size of the gated attention network.
    score
        Image logit: ``"attention"``, ``"localization"`` (LSE-pooled map) or
        ``"attention+localization"`` (the mean of both): the ablation switch.
    lse_r
        Sharpness of the LSE pooling of the localisation map.
    benign_output
        Add a benign head: a gated attention pooling of its own (benign findings are
        elsewhere than cancers, so it does not reuse the malignant attention) and a
        linear classifier on the same layer4 features, giving ``benign_logit``.

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
        benign_output: bool = False,
    ) -> None:
        # a weights file is read once, here: the backbone and the localisation head share it
        weights = read_weights_spec(pretrained)
        super().__init__(arch, pretrained=weights or pretrained, tiny_width=tiny_width, dropout=dropout,
                         benign_output=benign_output)
        if score not in ("attention", "localization", "attention+localization"):
            raise ValueError(f"score must be attention, localization or attention+localization, got {score!r}")
        self.score = score
        self.lse_r = float(lse_r)
        c = self.num_features
        self.attention_pool = GatedAttentionPool(c, attention_dim)
        self.classifier = nn.Linear(c, 1)
        self.loc_head = nn.Conv2d(c + self.backbone.mid_channels, 1, 1)
        nn.init.zeros_(self.loc_head.bias)
        self.loc_head_from_patch = init_loc_head_from_patch(self.loc_head, weights, c)
        if self.benign_output:  # created last: the malignant path initialises as without it
            self.benign_pool = GatedAttentionPool(c, attention_dim)
            self.benign_classifier = nn.Linear(c, 1)

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
        out = {
            "logit": logit,
            "attention": att,
            "localization": loc,
            "attention_logit": att_logit,
            "localization_logit": loc_logit,
        }
        if self.benign_output:
            zb, _ = self.benign_pool(c4)
            out["benign_logit"] = self.benign_classifier(self.drop(zb)).squeeze(1).float()
        return out


class BaselineMammoNet(_MammoNet):
    """The same trunk with global average pooling + a linear classifier (the ablation)."""

    kind = "baseline"

    def __init__(
        self, arch: str = "resnet50", *, pretrained: str = "none", dropout: float = 0.0, tiny_width: int = 16,
        benign_output: bool = False, **_: Any,
    ) -> None:
        super().__init__(arch, pretrained=pretrained, tiny_width=tiny_width, dropout=dropout, benign_output=benign_output)
        self.classifier = nn.Linear(self.num_features, 1)
        if self.benign_output:
            self.benign_classifier = nn.Linear(self.num_features, 1)

    def forward_head(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c4 = feats["c4"]
        b, _, h, w = c4.shape
        logit = self.classifier(self.drop(c4.mean(dim=(2, 3)))).squeeze(1).float()
        # CAM: the classifier applied at each location; its mean equals the logit
        cam = (torch.einsum("bchw,c->bhw", c4, self.classifier.weight[0].to(c4.dtype)) + self.classifier.bias[0]).float()
        att = torch.full((b, h, w), 1.0 / (h * w), device=c4.device, dtype=torch.float32)
        out = {"logit": logit, "attention": att, "localization": cam}
        if self.benign_output:
            out["benign_logit"] = self.benign_classifier(self.drop(c4.mean(dim=(2, 3)))).squeeze(1).float()
        return out
