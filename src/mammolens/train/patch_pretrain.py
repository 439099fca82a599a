"""Patch-level pretraining of a backbone on lesion vs background patches.

Small annotated datasets (mini-MIAS: ~160 training images per fold) are too small to
train a whole-image classifier from scratch: the image label says *that* an image holds
a cancer, not *where*, and a few dozen positive images cannot teach a CNN what a lesion
looks like. The lesion annotations carry much more supervision. Shen et al. (2019)
exploit it in two stages: (1) train the backbone as a **patch classifier** on patches
centred on annotated lesions and on random background patches, (2) initialise the
whole-image model with that backbone and train it on image labels. This module does
stage (1) for any :class:`mammolens.models.backbone.Backbone` and writes a state dict that
``mammolens.models.create_model(name, pretrained=PATH)`` loads.

The functions work on preprocessed images (float32 ``(H, W)`` in [0, 1]) with their
lesion masks (uint8, 0 background, 1 benign/unknown, 2 malignant), e.g. from
``mammolens.data.cache.open_cache(dir).load(image_id)`` or
:func:`mammolens.data.preprocess.preprocess_image`. Patches are cut at the pixel scale of
those images, which is the scale the whole-image model sees, so the patch-trained filters
respond to lesions of the size they will meet later (Shen et al. cut patches from images
at the resolution of the whole-image stage for the same reason).

Leakage: pass only the training images of a fold (or name the held-out ones in
``exclude``); :func:`sample_patches` never cuts a patch from an excluded image.

Example
-------
>>> from mammolens.train.patch_pretrain import patch_pretrain
>>> res = patch_pretrain(images, masks, ids, "patch_resnet18.pt", arch="resnet18",
...                      exclude=held_out_ids, epochs=4)            # doctest: +SKIP
>>> from mammolens.models import create_model
>>> model = create_model("attention_resnet18", pretrained="patch_resnet18.pt")  # doctest: +SKIP

References
----------
.. [1] Shen L, Margolies LR, Rothstein JH, Fluder E, McBride R, Sieh W. Deep learning to
   improve breast cancer detection on screening mammography. Scientific Reports
   2019;9:12495. doi:10.1038/s41598-019-48995-4
.. [2] Lotter W, Sorensen G, Cox D. A multi-scale CNN and curriculum learning strategy
   for mammogram classification. DLMIA 2017 (patch-to-image curriculum).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammolens.data.preprocess import breast_region, window_sums
from mammolens.errors import ConfigError, LeakageError
from mammolens.train.loop import StepOutput, run_epochs

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: patch classes (``classes=3``); with ``classes=2`` benign and malignant merge into 1
PATCH_BACKGROUND, PATCH_BENIGN, PATCH_MALIGNANT = 0, 1, 2
CLASS_NAMES = {3: ("background", "benign", "malignant"), 2: ("background", "lesion")}


@dataclass
class PatchSet:
    """Patches and their labels.

    Attributes
    ----------
    patches : np.ndarray
        float32 ``(N, P, P)`` in [0, 1] (zero-padded where a patch leaves the image).
    labels : np.ndarray
        int64 ``(N,)``: 0 background, 1 benign, 2 malignant (``classes=3``) or
        0 background, 1 lesion (``classes=2``).
    image_ids : np.ndarray
        ``(N,)`` the image each patch was cut from.
    centers : np.ndarray
        float ``(N, 2)`` patch centres ``(x, y)`` in the image's pixel coordinates.
    classes : int
        2 or 3.
    """

    patches: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray
    centers: np.ndarray
    classes: int = 3

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> dict[str, int]:
        """Number of patches per class name."""
        names = CLASS_NAMES[self.classes]
        return {names[c]: int((self.labels == c).sum()) for c in range(self.classes)}


@dataclass
class PatchPretrainResult:
    """What :func:`patch_pretrain_backbone` / :func:`patch_pretrain` did.

    ``history`` holds one dict per epoch (``epoch, loss, accuracy``, and ``val_loss,
    val_accuracy`` when a validation set was given).
    """

    n_patches: int
    counts: dict[str, int]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    path: str | None = None
    arch: str = ""
    #: the trained patch classifier (backbone + head), for sliding-window use; not serialised
    classifier: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_patches": self.n_patches,
            "counts": dict(self.counts),
            "history": [dict(h) for h in self.history],
            "seconds": self.seconds,
            "path": self.path,
            "arch": self.arch,
        }


# ----------------------------------------------------------------------------- sampling
def _cut(img: np.ndarray, cx: float, cy: float, p: int) -> np.ndarray:
    """A ``p x p`` patch centred on ``(cx, cy)``, zero-padded outside the image."""
    h, w = img.shape
    x0 = int(round(cx - p / 2))
    y0 = int(round(cy - p / 2))
    out = np.zeros((p, p), dtype=np.float32)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + p), min(h, y0 + p)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def sample_patches(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    image_ids: Sequence[str],
    *,
    patch_size: int = 64,
    per_lesion: int = 8,
    background_per_image: int = 8,
    jitter: float = 0.5,
    classes: int = 3,
    exclude: Iterable[str] = (),
    min_breast_fraction: float = 0.6,
    max_lesion_overlap: float = 0.0,
    breast_threshold: float = 0.05,
    seed: int = 0,
) -> PatchSet:
    """Cut lesion-centred and background patches from annotated images.

    Parameters
    ----------
    images
        float32 ``(H, W)`` images in [0, 1] (preprocessed: breast bright on black).
    masks
        uint8 lesion masks of the same shapes (0 background, 1 benign/unknown,
        2 malignant) or ``None`` for an image without annotations (then it only gives
        background patches if it is known to be lesion-free: pass an all-zero mask for
        normal images; ``None`` images give no patches at all).
    image_ids
        One id per image.
    patch_size
        Side of the square patches, in pixels of ``images``.
    per_lesion
        Patches per annotated lesion (connected component of the mask), centres drawn
        uniformly within ``jitter`` x the lesion's equivalent radius of its centroid,
        and at most ``patch_size / 4`` away so the lesion stays inside the patch.
    background_per_image
        Background patches per image: random centres whose patch lies mostly inside the
        breast (``min_breast_fraction``; the breast is
        :func:`mammolens.data.preprocess.breast_region` at ``breast_threshold``) and
        overlaps lesions by at most ``max_lesion_overlap`` (fraction of the patch).
    classes
        3 (background / benign / malignant) or 2 (background / lesion).
    exclude
        Image ids that must not give any patch (the held-out fold).
    seed
        Random seed (sampling is deterministic given the inputs and the seed).

    Returns
    -------
    PatchSet
    """
    import cv2

    if classes not in (2, 3):
        raise ConfigError(f"classes must be 2 or 3, got {classes}")
    if patch_size < 8:
        raise ConfigError(f"patch_size must be at least 8 pixels, got {patch_size}")
    if not (len(images) == len(masks) == len(image_ids)):
        raise ConfigError(f"images ({len(images)}), masks ({len(masks)}) and image_ids ({len(image_ids)}) differ in length")
    if per_lesion < 0 or background_per_image < 0:
        raise ConfigError("per_lesion and background_per_image must be >= 0")
    excluded = {str(e) for e in exclude}
    rng = np.random.default_rng(seed)
    p = int(patch_size)
    out_p: list[np.ndarray] = []
    out_y: list[int] = []
    out_id: list[str] = []
    out_c: list[tuple[float, float]] = []
    for img, mask, iid in zip(images, masks, image_ids, strict=True):
        if str(iid) in excluded or mask is None:
            continue
        img = np.asarray(img, dtype=np.float32)
        mask = np.asarray(mask)
        if img.ndim != 2 or mask.shape != img.shape:
            raise ConfigError(f"image {iid}: image {img.shape} and mask {mask.shape} must be 2-D and of equal shape")
        h, w = img.shape
        # lesion patches: one group per connected component
        lesion = (mask > 0).astype(np.uint8)
        n, lab, stats, cents = cv2.connectedComponentsWithStats(lesion, connectivity=8)
        for k in range(1, n):
            comp = lab == k
            value = int(mask[comp].max())
            y = (PATCH_MALIGNANT if value >= 2 else PATCH_BENIGN) if classes == 3 else 1
            r_eq = math.sqrt(stats[k, cv2.CC_STAT_AREA] / math.pi)
            r_max = min(jitter * r_eq, p / 4)
            cx, cy = cents[k]
            for _ in range(per_lesion):
                rad = r_max * math.sqrt(rng.random())
                ang = rng.random() * 2 * math.pi
                x, yy = cx + rad * math.cos(ang), cy + rad * math.sin(ang)
                out_p.append(_cut(img, x, yy, p))
                out_y.append(y)
                out_id.append(str(iid))
                out_c.append((float(x), float(yy)))
        # background patches
        if background_per_image == 0:
            continue
        area = float(p * p)  # window_sums counts 0/1 pixels exactly (int64)
        bfrac = window_sums(breast_region(img, threshold=breast_threshold), p, full=True) / area
        lfrac = window_sums(lesion, p, full=True) / area
        ok = (bfrac >= min_breast_fraction) & (lfrac <= max_lesion_overlap)
        ys, xs = np.nonzero(ok)
        if ys.size == 0:
            continue
        pick = rng.choice(ys.size, size=min(background_per_image, ys.size), replace=False)
        for i in pick:
            x0, y0 = int(xs[i]), int(ys[i])
            out_p.append(img[y0 : y0 + p, x0 : x0 + p].copy() if y0 + p <= h and x0 + p <= w else _cut(img, x0 + p / 2, y0 + p / 2, p))
            out_y.append(PATCH_BACKGROUND)
            out_id.append(str(iid))
            out_c.append((x0 + p / 2, y0 + p / 2))
    if not out_p:
        return PatchSet(np.zeros((0, p, p), np.float32), np.zeros(0, np.int64), np.zeros(0, dtype=object), np.zeros((0, 2)), classes)
    return PatchSet(
        np.stack(out_p).astype(np.float32),
        np.asarray(out_y, dtype=np.int64),
        np.asarray(out_id, dtype=object),
        np.asarray(out_c, dtype=float),
        classes,
    )


# ----------------------------------------------------------------------------- training
class PatchClassifier:
    """Factory for the patch classifier: backbone -> global average pool -> linear."""

    @staticmethod
    def build(backbone: nn.Module, classes: int) -> nn.Module:
        import torch
        from torch import nn

        from mammolens.models.backbone import GRAY_MEAN, GRAY_STD

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.backbone = backbone
                self.head = nn.Linear(int(backbone.out_channels), classes)
                self.register_buffer("mean", torch.tensor(float(getattr(backbone, "input_mean", GRAY_MEAN))), persistent=False)
                self.register_buffer("std", torch.tensor(float(getattr(backbone, "input_std", GRAY_STD))), persistent=False)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                feats = self.backbone((x - self.mean) / self.std)
                c4 = feats[-1] if isinstance(feats, (tuple, list)) else feats
                return self.head(c4.mean(dim=(2, 3)))

        return _Net()


def patch_pretrain_backbone(
    backbone: nn.Module,
    patches: PatchSet,
    *,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    augment: bool = True,
    balance: bool = True,
    val: PatchSet | None = None,
    seed: int = 0,
    device: str = "cpu",
    max_steps: int | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    freeze: str = "none",
) -> PatchPretrainResult:
    """Train ``backbone`` in place as a patch classifier (GAP + linear head, cross-entropy).

    Parameters
    ----------
    backbone
        A module mapping ``(B, 1, P, P)`` normalised images to a feature map (or a tuple
        whose last item is the final feature map) with attribute ``out_channels``, e.g.
        :func:`mammolens.models.build_backbone`. Input normalisation (gray ImageNet
        mean/std) is the one the whole-image models apply.
    patches
        Training patches from :func:`sample_patches`.
    epochs, batch_size, lr, weight_decay
        Adam with cosine decay of the learning rate over all steps.
    augment
        Random flips / 90 degree turns / intensity changes
        (:func:`mammolens.data.augment.patch_augment`).
    balance
        Weight the cross-entropy by inverse class frequency (lesion patches are rare).
    val
        Optional validation patches: loss and accuracy reported per epoch.
    max_steps
        Stop after this many optimisation steps (tests, smoke runs).
    progress
        Called with each epoch's record.
    freeze
        ``none``, ``early`` (ImageNet's generic early stages kept, and their backward
        pass saved) or ``backbone`` (only the patch head learns); see
        :func:`mammolens.models.backbone.freeze_parameters`.

    Returns
    -------
    PatchPretrainResult
    """
    import torch
    import torch.nn.functional as F

    from mammolens.data.augment import patch_augment

    if len(patches) == 0:
        raise ConfigError("no patches to train on: are there annotated lesions in the training images?")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError("epochs and batch_size must be >= 1 and lr > 0")
    if not hasattr(backbone, "out_channels"):
        raise ConfigError("the backbone must expose out_channels (see mammolens.models.build_backbone)")
    t0 = time.time()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    classes = patches.classes
    from mammolens.models.backbone import freeze_parameters

    freeze_parameters(backbone, freeze)
    net = PatchClassifier.build(backbone, classes).to(device)
    x_all = torch.from_numpy(patches.patches).unsqueeze(1)
    y_all = torch.from_numpy(patches.labels)
    counts = torch.bincount(y_all, minlength=classes).float()
    weight = None
    if balance:
        weight = torch.where(counts > 0, counts.sum() / (classes * counts.clamp(min=1)), torch.zeros_like(counts)).to(device)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(patches) / batch_size)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(1, total))))
    pipeline = patch_augment() if augment else None

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(patches), generator=gen)
        for i in range(0, len(patches), batch_size):
            idx = perm[i : i + batch_size]
            if idx.numel() < 2:  # batch-norm needs two samples
                continue
            x = x_all[idx]
            if pipeline is not None:
                x, _ = pipeline(x, generator=gen)
            yield x.to(device), y_all[idx].to(device)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        logits = net(x)
        loss = F.cross_entropy(logits, y, weight=weight)
        return StepOutput(loss, weight=len(y), sums={"accuracy": int((logits.argmax(1) == y).sum())})

    def validate(epoch: int, rec: dict[str, float]) -> dict[str, float]:
        return evaluate_patches(net, val, device=device, weight=weight) if val is not None and len(val) > 0 else {}

    res = run_epochs(net, epochs=epochs, batches=batches, step=step, optimizer=opt, scheduler=sched, max_steps=max_steps,
                     end_epoch=validate, on_epoch=progress, stage="patch stage")
    return PatchPretrainResult(len(patches), patches.counts(), res.history, time.time() - t0, None, str(getattr(backbone, "arch", "")), net)


def evaluate_patches(net: nn.Module, val: PatchSet, *, device: str = "cpu", weight: torch.Tensor | None = None, batch_size: int = 256) -> dict[str, float]:
    """Loss and accuracy of a patch classifier (from :meth:`PatchClassifier.build`) on ``val``."""
    import torch
    import torch.nn.functional as F

    was = net.training
    net.eval()
    tot, ok = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(val), batch_size):
            x = torch.from_numpy(val.patches[i : i + batch_size]).unsqueeze(1).to(device)
            y = torch.from_numpy(val.labels[i : i + batch_size]).to(device)
            lg = net(x)
            tot += float(F.cross_entropy(lg, y, weight=weight, reduction="sum"))
            ok += int((lg.argmax(1) == y).sum())
    net.train(was)
    return {"val_loss": tot / max(1, len(val)), "val_accuracy": ok / max(1, len(val))}


def patch_pretrain(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    image_ids: Sequence[str],
    out: str | Path,
    *,
    arch: str = "resnet18",
    tiny_width: int = 16,
    init: str | Path = "none",
    exclude: Iterable[str] = (),
    patch_size: int = 64,
    per_lesion: int = 8,
    background_per_image: int = 8,
    classes: int = 3,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 1e-3,
    augment: bool = True,
    seed: int = 0,
    device: str = "cpu",
    max_steps: int | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    freeze: str = "none",
) -> PatchPretrainResult:
    """Sample patches, pretrain a fresh backbone on them and save its weights to ``out``.

    Parameters
    ----------
    images, masks, image_ids
        Training images, their lesion masks and ids (see :func:`sample_patches`).
    out
        Weights file to write (``.pt``), for ``create_model(name, pretrained=out)``.
    arch, tiny_width, init
        Backbone (:func:`mammolens.models.build_backbone`) and its starting weights
        (``"none"``, ``"imagenet"`` or a file).
    exclude
        Held-out image ids: never sampled (a :class:`~mammolens.errors.LeakageError` is
        raised if a patch from one of them slipped through).

    Other parameters are those of :func:`sample_patches` and :func:`patch_pretrain_backbone`.
    """
    from mammolens.models.backbone import build_backbone, save_backbone_weights

    excluded = {str(e) for e in exclude}
    ps = sample_patches(
        images, masks, image_ids, patch_size=patch_size, per_lesion=per_lesion,
        background_per_image=background_per_image, classes=classes, exclude=excluded, seed=seed,
    )
    leaked = excluded.intersection(set(ps.image_ids.tolist()))
    if leaked:  # pragma: no cover - sample_patches guarantees this
        raise LeakageError(f"patches cut from held-out images: {sorted(leaked)[:5]}")
    import torch

    torch.manual_seed(seed)  # the backbone's random initial weights are part of the run: seed them too
    bb = build_backbone(arch, pretrained=init, tiny_width=tiny_width)
    res = patch_pretrain_backbone(
        bb, ps, epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, seed=seed,
        device=device, max_steps=max_steps, progress=progress, freeze=freeze,
    )
    for p in bb.parameters():  # frozen only for this stage
        p.requires_grad_(True)
    meta = {"arch": arch, "tiny_width": tiny_width, "patch_size": patch_size, "classes": classes, "n_patches": len(ps), "seed": seed, "freeze": freeze}
    res.path = str(save_backbone_weights(bb.cpu(), out, meta=meta, head=res.classifier.head.cpu()))
    return res
