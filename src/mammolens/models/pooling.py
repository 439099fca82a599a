"""Pooling operators over a spatial feature map.

* :class:`GatedAttentionPool` -- gated attention MIL pooling (Ilse, Tomczak & Welling,
  "Attention-based deep multiple instance learning", ICML 2018, eq. 9): every location
  ``k`` of the ``h x w`` map is an instance with embedding ``h_k``; its weight is
  ``a_k = softmax_k( w^T (tanh(V h_k) * sigmoid(U h_k)) )`` and the image embedding is
  ``z = sum_k a_k h_k``. The weights sum to 1 per image and form the attention heatmap.
* :func:`lse_pool` -- log-sum-exp pooling of a score map (Pinheiro & Collobert, CVPR
  2015), a smooth maximum between the mean (``r -> 0``) and the max (``r -> inf``), used
  to train the localisation map weakly from image labels.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GatedAttentionPool(nn.Module):
    """Gated attention pooling over ``(B, C, h, w)`` features.

    Parameters
    ----------
    in_channels
        ``C``, the feature dimension of each location.
    hidden
        ``L``, the dimension of the attention network (128 in Ilse et al.).
    """

    def __init__(self, in_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.V = nn.Conv2d(in_channels, hidden, 1)
        self.U = nn.Conv2d(in_channels, hidden, 1)
        self.w = nn.Conv2d(hidden, 1, 1)

    def forward(self, feats: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(z (B, C), attention (B, h, w))``.

        ``valid`` (optional bool ``(B, h, w)``) excludes locations (e.g. padding) from
        the softmax; an image with no valid location falls back to all locations.
        """
        b, _, h, w = feats.shape
        logits = self.w(torch.tanh(self.V(feats)) * torch.sigmoid(self.U(feats))).view(b, h * w)
        logits = logits.float()
        if valid is not None:
            v = valid.view(b, h * w)
            v = v | ~v.any(dim=1, keepdim=True)
            logits = logits.masked_fill(~v, float("-inf"))
        a = torch.softmax(logits, dim=1)
        z = torch.bmm(a.unsqueeze(1).to(feats.dtype), feats.flatten(2).transpose(1, 2)).squeeze(1)
        return z, a.view(b, h, w)


def lse_pool(score_map: torch.Tensor, r: float = 5.0) -> torch.Tensor:
    """Log-sum-exp pooling of ``(B, h, w)`` logits to ``(B,)``.

    ``(1/r) * log( mean_k exp(r * s_k) )``: the mean for small ``r``, the max for large.
    """
    b = score_map.shape[0]
    s = score_map.reshape(b, -1).float()
    return (torch.logsumexp(r * s, dim=1) - math.log(s.shape[1])) / r
