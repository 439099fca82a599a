"""The training loss: image classification + lesion localisation (dense or weak).

``L = BCE(logit, y; pos_weight) + loc_weight * L_loc`` (with ``loc_target="lesion"`` the
classification term uses the attention classifier's logit) where, per image,

* with a lesion mask (cache mask present and, for a malignant image, some pixel = 2):
  dense binary cross-entropy between the localisation logits (layer4 grid) and the
  malignant mask (or, ``train.loc_target: lesion``, every annotated finding) max-pooled
  to that grid (a cell is positive when any of its pixels is
  malignant), lesion and background cells weighted equally (:func:`balanced_dense_bce`);
* without one: multiple-instance (weak) supervision: binary cross-entropy between the
  LSE-pooled localisation map (:func:`mammolens.models.lse_pool`) and the image label.

``L_loc`` is the mean over the batch of those per-image terms. With the benign output
(``model.benign_output``) ``+ benign_weight * BCE(benign_logit, b; benign_pos_weight)``
over the images whose benign target ``b`` is known (:func:`benign_loss`). Class imbalance is handled
by ``pos_weight = n_negative / n_positive`` of the training split on the classification
term (or by a weighted sampler, ``train.imbalance``; see docs/training.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mammolens.data.lesions import MASK_MALIGNANT
from mammolens.models.pooling import lse_pool


def mask_targets(mask: torch.Tensor, grid: tuple[int, int], *, target: str = "malignant") -> torch.Tensor:
    """Lesion mask ``(B, H, W)`` -> ``(B, h, w)`` float targets (any-pixel max pooling).

    ``target="malignant"``: malignant pixels only (benign findings are background);
    ``"lesion"``: every annotated finding, benign ones included (they teach the
    appearance of masses and calcifications to a detector trained on few cancers).
    """
    if target not in LOC_TARGETS:
        raise ValueError(f"loc_target must be one of {LOC_TARGETS}, got {target!r}")
    m = ((mask == MASK_MALIGNANT) if target == "malignant" else (mask > 0)).float().unsqueeze(1)
    return F.adaptive_max_pool2d(m, grid).squeeze(1)


LOC_TARGETS = ("malignant", "lesion")


def balanced_dense_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image BCE with lesion and background cells weighted equally: ``(B,)``.

    A lesion covers a few cells of the grid; an unweighted mean would let the background
    drown it. For an image with lesion cells the loss is the mean of (mean BCE over lesion
    cells) and (mean BCE over background cells); without, the mean over all cells.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1)
    t = target.flatten(1)
    n_pos = t.sum(dim=1)
    n_neg = t.shape[1] - n_pos
    pos = (bce * t).sum(dim=1) / n_pos.clamp_min(1)
    neg = (bce * (1 - t)).sum(dim=1) / n_neg.clamp_min(1)
    return torch.where(n_pos > 0, 0.5 * (pos + neg), bce.mean(dim=1))


def benign_loss(
    out: dict[str, torch.Tensor], batch: dict[str, Any], *, pos_weight: float | None = None
) -> torch.Tensor | None:
    """BCE of the benign output over the images with a known benign target, or ``None``.

    ``None`` when the model has no benign output or the batch carries no ``benign``
    targets; ``0`` (connected to the graph) when none of the batch's targets is known
    (``NaN``), so such images never pull the benign head either way.
    """
    if "benign_logit" not in out or "benign" not in batch:
        return None
    z = out["benign_logit"].float()
    t = torch.as_tensor(batch["benign"], dtype=torch.float32, device=z.device)
    known = torch.isfinite(t)
    if not known.any():
        return z.sum() * 0.0
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=z.device)
    return F.binary_cross_entropy_with_logits(z[known], t[known], pos_weight=pw)


def mammo_loss(
    out: dict[str, torch.Tensor],
    batch: dict[str, Any],
    *,
    loc_weight: float = 1.0,
    lse_r: float = 5.0,
    pos_weight: float | None = None,
    loc_target: str = "malignant",
    benign_weight: float = 1.0,
    benign_pos_weight: float | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Return ``(total_loss, parts)``; ``parts`` has ``cls``, ``loc`` (and with the benign
    output ``benign``) tensors and ``n_dense``."""
    total, parts = _malignant_loss(out, batch, loc_weight=loc_weight, lse_r=lse_r, pos_weight=pos_weight, loc_target=loc_target)
    ben = benign_loss(out, batch, pos_weight=benign_pos_weight)
    if ben is not None:
        parts["benign"] = ben
        if benign_weight > 0:
            total = total + benign_weight * ben
    return total, parts


def _malignant_loss(
    out: dict[str, torch.Tensor],
    batch: dict[str, Any],
    *,
    loc_weight: float,
    lse_r: float,
    pos_weight: float | None,
    loc_target: str,
) -> tuple[torch.Tensor, dict[str, Any]]:
    logit = out["logit"].float()
    if loc_target == "lesion" and "attention_logit" in out:
        # the localisation map is a lesion detector (benign findings are positives there):
        # the image label (malignant or not) trains the attention classifier, and must not
        # pull a benign image's lesion cells down through a localisation-based image score
        logit = out["attention_logit"].float()
    y = batch["label"].float().to(logit.device)
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=logit.device)
    cls = F.binary_cross_entropy_with_logits(logit, y, pos_weight=pw)
    parts: dict[str, Any] = {"cls": cls, "n_dense": 0}
    if loc_weight <= 0 or "localization_logit" not in out:
        parts["loc"] = torch.zeros((), device=logit.device)
        return cls, parts
    loc = out["localization"].float()
    b = loc.shape[0]
    has_mask = batch["has_mask"].to(loc.device).bool()
    per = torch.zeros(b, device=loc.device)
    if has_mask.any():
        tgt = mask_targets(batch["mask"].to(loc.device), tuple(loc.shape[-2:]), target=loc_target)
        dense = balanced_dense_bce(loc, tgt)
        per = torch.where(has_mask, dense, per)
    if (~has_mask).any():
        weak = F.binary_cross_entropy_with_logits(lse_pool(loc, lse_r), y, reduction="none")
        per = torch.where(has_mask, per, weak)
    loc_loss = per.mean()
    parts["loc"] = loc_loss
    parts["n_dense"] = int(has_mask.sum().item())
    return cls + loc_weight * loc_loss, parts
