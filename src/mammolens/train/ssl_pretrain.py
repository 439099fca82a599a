"""Self-supervised (SimCLR) pretraining of a backbone on unlabeled mammograms.

Most mammograms of a small study carry an image label at best and most patches carry
none; lesion annotations (used by :mod:`mammolens.train.patch_pretrain`) exist for a few
dozen images. Contrastive self-supervision uses *all* the training pixels: two random
augmentations ("views") of the same breast patch must map to nearby embeddings, views of
different patches to distant ones. The backbone so learns what breast tissue looks
like -- texture, density, calcification-like dots, edges -- at the pixel scale of the
whole-image model, without a single label. This module implements SimCLR [1]_ on patches
cut at random positions inside the breast, in the spirit of Miller et al. [2]_ (who
pretrained on mammogram patches with a contrastive objective before whole-image
fine-tuning) and of Azizi et al. [3]_ (self-supervision on the target medical domain
adds to, or replaces, ImageNet initialisation).

Method
------
* **Patches.** Square patches of ``patch_size`` pixels, fully inside the image and with
  at least ``min_breast_fraction`` of their pixels inside the breast
  (:func:`mammolens.data.preprocess.breast_region`): patches of black background
  would be trivially identical and teach nothing. :func:`ssl_pretrain` draws a **fresh
  set of positions every epoch** (``resample=True``) -- the images are unlabeled, so
  every position is a valid sample and more variety costs nothing.
* **Views** (:func:`mammolens.data.augment.view_augment`, two draws of one pipeline):
  random resized crop inside the patch (area 0.5--1 of it, aspect 3/4--4/3, resized
  back), one of the 8 flips/90 degree turns (a mammogram patch has no preferred
  orientation), intensity jitter (gamma, contrast, brightness: the gray-level analogue
  of SimCLR's colour distortion, which Chen et al. found essential, p=0.8), and Gaussian
  blur (p=0.5) or Gaussian noise (p=0.25). Parameters are drawn per patch from a CPU
  generator, so the same seed gives the same views on any device.
* **Encoder** = backbone -> global average pool of the last (layer4) map; **projection
  head** = Linear -> BatchNorm -> ReLU -> Linear (128-d); the head is thrown away after
  pretraining (Chen et al.: the representation *before* the head transfers better).
* **Loss**: NT-Xent (:func:`nt_xent`) with temperature ``0.2``; AdamW with a short
  linear warm-up and cosine decay. Quality signal per epoch: top-1 positive-pair
  retrieval accuracy within the batch (chance ``1 / (2B - 1)``).

Output: a weights file in the format of
:func:`mammolens.models.backbone.save_backbone_weights` **without** ``patch_head``
(there is no classifier), so ``create_model("attention_resnet18", pretrained=PATH)``
loads the backbone and leaves the localisation head at its default initialisation. The
file can also be the ``init`` of :func:`mammolens.train.patch_pretrain.patch_pretrain`
(SSL first, then supervised patches, then whole images).

Leakage: pass only the training images of a fold, or name the held-out ones in
``exclude``: they never give a patch (a :class:`~mammolens.errors.LeakageError` is
raised if one ever did). Unlabeled does not mean harmless -- pretraining on a test image
lets the backbone memorise its texture.

Example
-------
>>> from mammolens.train.ssl_pretrain import ssl_pretrain
>>> res = ssl_pretrain(images, ids, "ssl_resnet18.pt", arch="resnet18",
...                    exclude=held_out_ids, epochs=10)            # doctest: +SKIP
>>> from mammolens.models import create_model
>>> model = create_model("attention_resnet18", pretrained="ssl_resnet18.pt")  # doctest: +SKIP

References
----------
.. [1] Chen T, Kornblith S, Norouzi M, Hinton G. A simple framework for contrastive
   learning of visual representations. ICML 2020, PMLR 119:1597-1607.
.. [2] Miller JD, Arasu VA, Pu AX, Margolies LR, Sieh W, Shen L. Self-supervised deep
   learning to enhance breast cancer detection on screening mammography. arXiv 2022.
.. [3] Azizi S, Mustafa B, Ryan F, et al. Big self-supervised models advance medical
   image classification. ICCV 2021.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammolens.errors import ConfigError, LeakageError
from mammolens.train.loop import StepOutput, run_epochs

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: smallest patch side: a 0.5-area crop of a 16-pixel patch is ~11 pixels, below that
#: a stride-32 backbone sees little more than one pixel
MIN_PATCH = 16


@dataclass
class SSLPretrainResult:
    """What :func:`ssl_pretrain_backbone` / :func:`ssl_pretrain` did.

    ``history`` holds one dict per epoch: ``epoch, loss, accuracy`` (top-1 retrieval of
    the positive view among the ``2B - 1`` others of the batch), ``chance`` (``1 / (2B -
    1)`` for the batch size used), ``lr`` (at the end of the epoch), ``patches`` and
    ``seconds``.
    """

    n_patches: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    path: str | None = None
    arch: str = ""
    n_images: int = 0
    #: the trained encoder + projection head (:class:`SimCLRNet`); not serialised
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_patches": self.n_patches,
            "n_images": self.n_images,
            "history": [dict(h) for h in self.history],
            "seconds": self.seconds,
            "path": self.path,
            "arch": self.arch,
        }


# ----------------------------------------------------------------------------- sampling
def _valid_corners(breast: np.ndarray, p: int, min_fraction: float) -> np.ndarray:
    """Boolean ``(H-p+1, W-p+1)``: top-left corners whose ``p x p`` window is inside the image
    and at least ``min_fraction`` inside the breast."""
    from mammolens.data.preprocess import window_sums

    # integer comparison: no float rounding at the threshold
    return window_sums(np.asarray(breast, dtype=bool), p) >= math.ceil(min_fraction * p * p - 1e-9)


class _PatchSampler:
    """Valid positions of every usable image, computed once; :meth:`draw` cuts a fresh set."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        image_ids: Sequence[str],
        *,
        patch_size: int,
        per_image: int,
        exclude: Iterable[str],
        min_breast_fraction: float,
        breast_threshold: float,
    ) -> None:
        from mammolens.data.preprocess import breast_region

        if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < MIN_PATCH:
            raise ConfigError(f"patch_size must be an integer >= {MIN_PATCH} pixels, got {patch_size!r}")
        if isinstance(per_image, bool) or not isinstance(per_image, (int, np.integer)) or per_image < 1:
            raise ConfigError(f"per_image must be an integer >= 1, got {per_image!r}")
        if not 0.0 < float(min_breast_fraction) <= 1.0:
            raise ConfigError(f"min_breast_fraction must be in (0, 1], got {min_breast_fraction}")
        if len(images) != len(image_ids):
            raise ConfigError(f"images ({len(images)}) and image_ids ({len(image_ids)}) differ in length")
        ids = [str(i) for i in image_ids]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ConfigError(f"duplicate image ids: {dup[:5]}")
        excluded = {str(e) for e in exclude}
        self.p = int(patch_size)
        self.per_image = int(per_image)
        self.images: list[np.ndarray] = []
        self.ids: list[str] = []
        self.valid: list[np.ndarray] = []
        self.skipped: list[str] = []  # usable ids with no valid position (image too small, no breast)
        for img, iid in zip(images, ids, strict=True):
            if iid in excluded:
                continue
            img = np.asarray(img, dtype=np.float32)
            if img.ndim != 2:
                raise ConfigError(f"image {iid}: expected a 2-D (H, W) image, got shape {img.shape}")
            if img.shape[0] < self.p or img.shape[1] < self.p:
                self.skipped.append(iid)
                continue
            ok = _valid_corners(breast_region(img, threshold=breast_threshold), self.p, float(min_breast_fraction))
            if not ok.any():
                self.skipped.append(iid)
                continue
            self.images.append(img)
            self.ids.append(iid)
            self.valid.append(ok)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.p
        out_p: list[np.ndarray] = []
        out_id: list[str] = []
        out_xy: list[tuple[int, int]] = []
        for img, iid, ok in zip(self.images, self.ids, self.valid, strict=True):
            flat = np.flatnonzero(ok)
            pick = rng.choice(flat.size, size=min(self.per_image, flat.size), replace=False)
            ys, xs = np.unravel_index(flat[np.sort(pick)], ok.shape)
            for y0, x0 in zip(ys.tolist(), xs.tolist(), strict=True):
                out_p.append(img[y0 : y0 + p, x0 : x0 + p])
                out_id.append(iid)
                out_xy.append((x0, y0))
        if not out_p:
            return np.zeros((0, p, p), np.float32), np.zeros(0, dtype=object), np.zeros((0, 2), np.int64)
        return (
            np.stack(out_p).astype(np.float32, copy=False),
            np.asarray(out_id, dtype=object),
            np.asarray(out_xy, dtype=np.int64),
        )


def sample_unlabeled_patches(
    images: Sequence[np.ndarray],
    image_ids: Sequence[str],
    *,
    patch_size: int = 96,
    per_image: int = 32,
    exclude: Iterable[str] = (),
    min_breast_fraction: float = 0.6,
    breast_threshold: float = 0.05,
    seed: int = 0,
    return_origins: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut patches at random positions inside the breast of unlabeled images.

    Parameters
    ----------
    images
        float32 ``(H, W)`` images in [0, 1] (preprocessed: breast bright on black), at the
        pixel scale the whole-image model will see.
    image_ids
        One (unique) id per image.
    patch_size
        Side of the square patches in pixels (``>= 16``). A patch always lies fully
        inside its image (no padding: a black band would be an easy shortcut for the
        contrastive task).
    per_image
        Patches per image (fewer when the image has fewer valid positions); positions are
        distinct and drawn uniformly among the valid ones.
    exclude
        Image ids that must not give any patch (the held-out images of a fold).
    min_breast_fraction
        Least fraction of a patch's pixels inside the breast
        (:func:`mammolens.data.preprocess.breast_region` at ``breast_threshold``).
    seed
        Random seed: the result is deterministic given the inputs and the seed.
    return_origins
        Also return the patches' top-left corners ``(x0, y0)``.

    Returns
    -------
    patches : np.ndarray
        float32 ``(N, P, P)``.
    ids : np.ndarray
        ``(N,)`` the image each patch was cut from.
    origins : np.ndarray
        int64 ``(N, 2)`` top-left corners ``(x0, y0)`` (only with ``return_origins``).

    Images smaller than the patch or without a valid position give no patch; with no
    patch at all the arrays are empty (:func:`ssl_pretrain` then raises ConfigError).
    """
    sampler = _PatchSampler(
        images, image_ids, patch_size=patch_size, per_image=per_image, exclude=exclude,
        min_breast_fraction=min_breast_fraction, breast_threshold=breast_threshold,
    )
    patches, ids, xy = sampler.draw(np.random.default_rng(seed))
    return (patches, ids, xy) if return_origins else (patches, ids)


# ----------------------------------------------------------------------------- model, loss
class SimCLRNet:
    """Factory for the SimCLR network: backbone -> global average pool -> projection MLP."""

    @staticmethod
    def build(backbone: nn.Module, *, proj_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
        """Encoder (``backbone`` + GAP of its last map, normalised with the gray ImageNet
        mean/std like the whole-image models) and a 2-layer projection head.

        ``forward(x)`` returns the projections ``z`` (``(B, proj_dim)``); ``encode(x)``
        the representations ``h`` (``(B, out_channels)``) that are kept.
        """
        import torch
        from torch import nn

        from mammolens.models.backbone import GRAY_MEAN, GRAY_STD

        ch = int(backbone.out_channels)
        hid = int(hidden_dim or ch)

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.backbone = backbone
                # Chen et al.: a non-linear head in front of the loss; the layer before it
                # keeps more information (the loss makes z invariant to the augmentations)
                self.projector = nn.Sequential(
                    nn.Linear(ch, hid, bias=False), nn.BatchNorm1d(hid), nn.ReLU(inplace=True), nn.Linear(hid, proj_dim)
                )
                self.register_buffer("mean", torch.tensor(float(getattr(backbone, "input_mean", GRAY_MEAN))), persistent=False)
                self.register_buffer("std", torch.tensor(float(getattr(backbone, "input_std", GRAY_STD))), persistent=False)

            def encode(self, x: torch.Tensor) -> torch.Tensor:
                feats = self.backbone((x - self.mean) / self.std)
                c4 = feats[-1] if isinstance(feats, (tuple, list)) else feats
                return c4.mean(dim=(2, 3))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.projector(self.encode(x))

        return _Net()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent loss of SimCLR [1]_ and the top-1 positive retrieval accuracy.

    For ``2B`` L2-normalised embeddings ``u`` (``z1`` then ``z2``), anchor ``i`` with
    positive ``j`` (its other view) has loss
    ``-log( exp(u_i.u_j / t) / sum_{k != i} exp(u_i.u_k / t) )``; the loss is the mean
    over all ``2B`` anchors. The accuracy is the fraction of anchors whose most similar
    other embedding is their positive (chance ``1 / (2B - 1)``).

    Parameters
    ----------
    z1, z2
        ``(B, D)`` projections of the two views (row ``i`` of both: the same patch).
    temperature
        Softmax temperature ``t > 0`` (Chen et al.: 0.1--0.5; small values weigh hard
        negatives more).

    Returns
    -------
    loss : torch.Tensor
        Scalar, differentiable.
    accuracy : torch.Tensor
        Scalar in [0, 1], detached.
    """
    import torch
    import torch.nn.functional as F

    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 2:
        raise ConfigError(f"nt_xent needs two (B, D) tensors of equal shape with B >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = u @ u.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(sim.device)
    loss = F.cross_entropy(sim, target)
    acc = (sim.detach().argmax(1) == target).float().mean()
    return loss, acc


# ----------------------------------------------------------------------------- training
def _check_patches(patches: Any, where: str) -> np.ndarray:
    a = np.asarray(patches)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ConfigError(f"{where}: patches must be an (N, P, P) array, got shape {a.shape}")
    if a.shape[1] < MIN_PATCH:
        raise ConfigError(f"{where}: patch side {a.shape[1]} is below {MIN_PATCH} pixels")
    if a.shape[0] < 2:
        raise ConfigError(f"{where}: contrastive learning needs at least 2 patches, got {a.shape[0]}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ConfigError(f"{where}: patches must be floating point in [0, 1], got {a.dtype}")
    return a.astype(np.float32, copy=False)


def ssl_pretrain_backbone(
    backbone: nn.Module,
    patches: np.ndarray | Callable[[int], np.ndarray],
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    temperature: float = 0.2,
    proj_dim: int = 128,
    warmup: float = 0.05,
    min_scale: float = 0.5,
    seed: int = 0,
    device: str = "cpu",
    max_steps: int | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> SSLPretrainResult:
    """Train ``backbone`` in place with SimCLR on unlabeled patches.

    Parameters
    ----------
    backbone
        A module mapping ``(B, 1, P, P)`` normalised images to a feature map (or a tuple
        whose last item is the final map), with attribute ``out_channels``, e.g.
        :func:`mammolens.models.build_backbone`.
    patches
        float ``(N, P, P)`` patches in [0, 1] (e.g. :func:`sample_unlabeled_patches`), or
        a callable ``epoch -> (N, P, P) array`` (0-based epoch) giving a fresh set each
        epoch, as :func:`ssl_pretrain` does.
    epochs, batch_size, lr, weight_decay
        AdamW; the learning rate warms up linearly over the first ``warmup`` fraction of
        the steps, then decays with a cosine to 0. An epoch is one pass over the patches
        in batches of ``batch_size`` (``2 * batch_size`` views); the last, incomplete
        batch is dropped unless it is the only one (the NT-Xent loss depends on the
        batch size: mixing sizes would blur the history).
    temperature
        NT-Xent temperature (:func:`nt_xent`).
    proj_dim
        Output size of the projection head (thrown away after training).
    min_scale
        Smallest crop area of the views (:func:`mammolens.data.augment.view_augment`).
    seed
        Seeds the projection head's initialisation, the batch order and the views.
    max_steps
        Stop after this many optimisation steps (tests, smoke runs).
    progress
        Called with each epoch's record.

    Returns
    -------
    SSLPretrainResult
        ``model`` holds the trained :class:`SimCLRNet` (its ``backbone`` is ``backbone``).
    """
    import torch

    from mammolens.data.augment import view_augment

    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
    if batch_size < 2:
        raise ConfigError("batch_size must be >= 2 (each patch needs other patches as negatives)")
    if not lr > 0 or weight_decay < 0 or not temperature > 0:
        raise ConfigError(f"need lr > 0, weight_decay >= 0 and temperature > 0 (got {lr}, {weight_decay}, {temperature})")
    if not 0.0 <= warmup < 1.0 or not 0.0 < min_scale <= 1.0:
        raise ConfigError(f"warmup must be in [0, 1) and min_scale in (0, 1] (got {warmup}, {min_scale})")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
    if not hasattr(backbone, "out_channels"):
        raise ConfigError("the backbone must expose out_channels (see mammolens.models.build_backbone)")
    fresh = callable(patches)
    first = _check_patches(patches(0) if fresh else patches, "ssl_pretrain_backbone")
    n = first.shape[0]
    t0 = time.time()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = SimCLRNet.build(backbone, proj_dim=proj_dim).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    bs = min(batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    warm = int(warmup * total)

    def lr_at(s: int) -> float:  # s = steps done; multiplier for the next step
        if s < warm:
            return (s + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * min(s - warm, total - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    views = view_augment(min_scale=min_scale)
    epoch_info: dict[str, float] = {}

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        epoch_info["start"] = time.time()
        data = first if epoch == 0 else (_check_patches(patches(epoch), "ssl_pretrain_backbone") if fresh else first)
        x_all = torch.from_numpy(np.ascontiguousarray(data)).unsqueeze(1)
        m = data.shape[0]
        bs_ep = min(batch_size, m)
        epoch_info.update(patches=float(m), batch=float(bs_ep))
        perm = torch.randperm(m, generator=gen)
        for i in range(0, m - bs_ep + 1, bs_ep):  # the last, incomplete batch is dropped
            yield x_all[perm[i : i + bs_ep]].to(device)

    def step(x: torch.Tensor) -> StepOutput:
        b = x.shape[0]
        (v1, _), (v2, _) = views(x, generator=gen), views(x, generator=gen)  # two draws of one pipeline
        # both views in one forward pass: BatchNorm sees one batch of 2B, as in SimCLR
        z = net(torch.cat([v1, v2]))
        loss, acc = nt_xent(z[:b], z[b:], temperature=temperature)
        return StepOutput(loss, weight=1.0, sums={"accuracy": float(acc)})

    def end_epoch(epoch: int, rec: dict[str, float]) -> dict[str, float]:
        return {
            "chance": 1.0 / (2 * epoch_info["batch"] - 1),
            "lr": float(opt.param_groups[0]["lr"]),
            "patches": epoch_info["patches"],
            "seconds": time.time() - epoch_info["start"],
        }

    res = run_epochs(net, epochs=epochs, batches=batches, step=step, optimizer=opt, scheduler=sched, max_steps=max_steps,
                     end_epoch=end_epoch, on_epoch=progress, stage="SimCLR")
    return SSLPretrainResult(n, res.history, time.time() - t0, None, str(getattr(backbone, "arch", "")), 0, net)


def ssl_pretrain(
    images: Sequence[np.ndarray],
    image_ids: Sequence[str],
    out: str | Path,
    *,
    arch: str = "resnet18",
    tiny_width: int = 16,
    init: str | Path = "none",
    exclude: Iterable[str] = (),
    patch_size: int = 96,
    per_image: int = 32,
    min_breast_fraction: float = 0.6,
    breast_threshold: float = 0.05,
    resample: bool = True,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    temperature: float = 0.2,
    proj_dim: int = 128,
    seed: int = 0,
    device: str = "cpu",
    max_steps: int | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> SSLPretrainResult:
    """Sample unlabeled breast patches, pretrain a backbone with SimCLR, save its weights.

    Parameters
    ----------
    images, image_ids
        Training images (float32 ``(H, W)`` in [0, 1]) and their unique ids; no labels or
        masks are needed.
    out
        Weights file to write (``.pt``), in the format of
        :func:`mammolens.models.backbone.save_backbone_weights` without a patch head,
        for ``create_model(name, pretrained=out)``, ``build_backbone(arch,
        pretrained=out)`` or ``patch_pretrain(..., init=out)``.
    arch, tiny_width, init
        Backbone (:func:`mammolens.models.build_backbone`) and its starting weights
        (``"none"``, ``"imagenet"`` or a file: SimCLR on top of ImageNet adapts it to
        mammograms, Azizi et al. 2021).
    exclude
        Held-out image ids: never sampled (a :class:`~mammolens.errors.LeakageError` is
        raised if a patch from one of them slipped through).
    patch_size, per_image, min_breast_fraction, breast_threshold
        See :func:`sample_unlabeled_patches`.
    resample
        Draw new patch positions every epoch (seed ``seed + epoch``) rather than one
        fixed set: unlabeled positions are free, and fresh ones reduce overfitting of a
        long run to ``per_image`` positions per image.

    Other parameters are those of :func:`ssl_pretrain_backbone`.

    Returns
    -------
    SSLPretrainResult
        With ``path`` (the written file) and ``n_images`` (images that gave patches).
    """
    from mammolens.models.backbone import build_backbone, save_backbone_weights

    excluded = {str(e) for e in exclude}
    sampler = _PatchSampler(
        images, image_ids, patch_size=patch_size, per_image=per_image, exclude=excluded,
        min_breast_fraction=min_breast_fraction, breast_threshold=breast_threshold,
    )
    if not sampler.ids:
        raise ConfigError(
            f"no patch to train on: none of the {len(images)} images ({len(excluded)} excluded) has a "
            f"{patch_size}x{patch_size} window at least {min_breast_fraction:.0%} inside the breast"
        )

    def draw(epoch: int) -> np.ndarray:
        patches, ids, _ = sampler.draw(np.random.default_rng(seed + (epoch if resample else 0)))
        leaked = excluded.intersection(ids.tolist())
        if leaked:
            raise LeakageError(f"patches cut from held-out images: {sorted(leaked)[:5]}")
        return patches

    import torch

    torch.manual_seed(seed)  # the backbone's random initialisation is part of "deterministic for a seed"
    bb = build_backbone(arch, pretrained=init, tiny_width=tiny_width)
    res = ssl_pretrain_backbone(
        bb, draw if resample else draw(0), epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, temperature=temperature, proj_dim=proj_dim, seed=seed,
        device=device, max_steps=max_steps, progress=progress,
    )
    res.n_images = len(sampler.ids)
    last = res.history[-1] if res.history else {}
    meta = {
        "method": "simclr",
        "arch": arch,
        "tiny_width": tiny_width,
        "init": str(init),
        "patch_size": int(patch_size),
        "per_image": int(per_image),
        "resample": bool(resample),
        "epochs": len(res.history),
        "temperature": float(temperature),
        "n_images": res.n_images,
        "n_patches": res.n_patches,
        "seed": seed,
        "final_loss": float(last.get("loss", float("nan"))),
        "final_accuracy": float(last.get("accuracy", float("nan"))),
    }
    res.path = str(save_backbone_weights(bb.cpu(), out, meta=meta))
    return res
