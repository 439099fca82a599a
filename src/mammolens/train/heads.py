"""The heads stage: fit the model's heads on frozen backbone features computed once.

With a frozen backbone (an ImageNet or patch-pretrained trunk) every training epoch of
the whole-image stage would recompute the same feature maps. This stage computes them
once per training and validation image (and, as augmentation, once for its top-bottom
flip), keeps them in memory (float16), and trains only the heads (the localisation
head, and for the attention model the gated attention pooling and its classifier) with
the package's loss (:func:`mammolens.train.losses.mammo_loss`): dense supervision of the
localisation map from the cached lesion masks, weak (multiple-instance) supervision where
an image has none. The epoch with the best validation AUC is kept (early stopping).

Optionally (``finetune_top_epochs``) the backbone's top stage (the stride-16 -> stride-32
blocks) is then fine-tuned together with the heads for a few epochs, from the cached
stride-16 maps: the linear-probe-then-fine-tune order (LP-FT; Kumar et al., "Fine-Tuning
can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022) at a
fraction of a whole-trunk fine-tune's cost, which is what a CPU affords. Its batch-norm
statistics stay the ImageNet ones (eval mode), so prediction through the whole backbone
sees the same stride-16 maps the training saw.

It is the cheap, exact equivalent of ``train.freeze: backbone`` without the repeated
backbone passes (minus rotation / intensity augmentation), which is what makes the
small-data recipe affordable on a CPU at 200 um; ``train.max_epochs`` further epochs of
the usual whole-image stage (fine-tuning, GPU) may follow.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mammolens.data.lesions import MASK_MALIGNANT
from mammolens.errors import ConfigError
from mammolens.train.loop import StepOutput, run_epochs
from mammolens.train.losses import mammo_loss


@dataclass
class _Feats:
    c3: torch.Tensor  # (N, C3, h3, w3) float16
    c4: torch.Tensor  # (N, C4, h, w) float16
    mask: torch.Tensor  # (N, h, w) uint8: the cache mask max-pooled onto the c4 grid (0 / 1 benign / 2 malignant)
    has_mask: torch.Tensor  # (N,) bool
    label: torch.Tensor  # (N,) float
    benign: torch.Tensor  # (N,) float: benign target (1/0, NaN unknown; the benign output)
    image: np.ndarray  # (N,) index of the source image (a flip shares it)


class FeatureMemo:
    """Features of frozen backbones kept for the life of the process.

    Keyed by (backbone fingerprint, image key, flipped): the folds and seeds of
    ``mammolens cv`` share one frozen ImageNet trunk, so each image's features are
    computed once per run. The memory held is counted as entries are stored (checking
    the total costs nothing, however many images are kept); once it reaches
    ``max_bytes`` nothing more is stored.
    """

    def __init__(self, max_bytes: int = 4 << 30) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._entries: dict[tuple[str, str, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[str, str, bool]) -> bool:
        return key in self._entries

    def __getitem__(self, key: tuple[str, str, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._entries[key]

    @property
    def full(self) -> bool:
        return self.nbytes >= self.max_bytes

    def put(self, key: tuple[str, str, bool], c3: torch.Tensor, c4: torch.Tensor) -> None:
        old = self._entries.get(key)
        if old is not None:
            self.nbytes -= _nbytes(*old)
        self._entries[key] = (c3, c4)
        self.nbytes += _nbytes(c3, c4)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


_MEMO = FeatureMemo()


def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """A hash of a backbone's parameters and buffers (what its features depend on)."""
    import hashlib

    h = hashlib.sha1()
    for k, v in sorted(backbone.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class HeadsResult:
    """What :func:`fit_heads` did: epochs run, best epoch and validation AUC, history."""

    epochs_run: int
    best_epoch: int
    best_val_auc: float | None
    seconds: float
    seconds_features: float
    history: list[dict[str, float]] = field(default_factory=list)
    #: epochs of top-stage fine-tuning run after the heads (0: none) and their seconds
    top_epochs_run: int = 0
    seconds_top: float = 0.0


class _BackboneInEval(torch.nn.Module):
    """``model`` as :func:`run_epochs` sees it: ``train()`` puts the heads in training mode
    and keeps the backbone in eval mode (frozen batch-norm statistics, no drop-path)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _BackboneInEval:
        self.model.train(mode)
        self.model.backbone.eval()
        return self


@contextmanager
def _channels_last(backbone: torch.nn.Module) -> Iterator[None]:
    """Hold ``backbone`` in channels_last (NHWC) while the block runs; NCHW again after.

    The frozen trunk's one pass over every image is the heads stage's main cost, and
    oneDNN runs depthwise / pointwise convolutions ~1.7x faster in NHWC (Lite0 at
    1024x832 on the 2-core CPU: 2.8 s -> 1.7 s). :func:`fit_heads` converts once for both
    feature passes (training and validation images) and hands the model back in NCHW.
    """
    backbone.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        backbone.to(memory_format=torch.contiguous_format)


def _features(model: torch.nn.Module, items: Sequence[tuple], *, flip: bool,
              device: str, progress: Callable[[int, int], None] | None, keys: Sequence[str] | None = None,
              fp: str | None = None) -> _Feats:
    """The frozen backbone's features of ``items`` (and of their flips with ``flip``).

    The input batches are channels_last, so the pass runs in NHWC when the backbone is
    held so (:func:`_channels_last`, as :func:`fit_heads` does); it is correct in either
    layout. With ``keys``, features are looked up in and stored to the process's memo
    under the backbone's fingerprint ``fp`` (computed here when not given).
    """
    model.eval()
    if keys is not None and fp is None:
        fp = backbone_fingerprint(model.backbone)
    c3s, c4s, masks, has, labels, benign, src = [], [], [], [], [], [], []
    with torch.inference_mode():
        for i, item in enumerate(items):
            img, mask, label = item[:3]
            ben = float(item[3]) if len(item) > 3 and item[3] is not None else math.nan
            nviews = 2 if flip else 1
            mk = [(fp, str(keys[i]), bool(v)) for v in range(nviews)] if keys is not None else []
            if mk and all(k in _MEMO for k in mk):
                c3 = torch.cat([_MEMO[k][0] for k in mk])
                c4 = torch.cat([_MEMO[k][1] for k in mk])
            else:
                x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
                views = [x, torch.flip(x, dims=[-2])] if flip else [x]
                f = model.forward_features(torch.cat(views).to(device).contiguous(memory_format=torch.channels_last))
                c3 = f["c3"].to(torch.float16).cpu().contiguous()
                c4 = f["c4"].to(torch.float16).cpu().contiguous()
                if mk and not _MEMO.full:
                    for v, k in enumerate(mk):
                        _MEMO.put(k, c3[v : v + 1].clone(), c4[v : v + 1].clone())
            c3s.append(c3)
            c4s.append(c4)
            grid = tuple(c4.shape[-2:])
            for v in range(nviews):
                # as the dataset decides: a mask supervises densely unless a malignant image's
                # cancer is not outlined in it
                if mask is None or not (label == 0 or (np.asarray(mask) == MASK_MALIGNANT).any()):
                    masks.append(torch.zeros(grid, dtype=torch.uint8))
                    has.append(False)
                else:
                    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
                    if v == 1:
                        m = torch.flip(m, dims=[0])
                    masks.append(F.adaptive_max_pool2d(m[None, None], grid)[0, 0].to(torch.uint8))
                    has.append(True)
                labels.append(float(label))
                benign.append(ben)
                src.append(i)
            if progress is not None:
                progress(i + 1, len(items))
    return _Feats(torch.cat(c3s), torch.cat(c4s), torch.stack(masks), torch.tensor(has), torch.tensor(labels),
                  torch.tensor(benign, dtype=torch.float32), np.array(src))


def _head_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if not n.startswith("backbone.")]


def fit_heads(
    model: torch.nn.Module,
    train_items: Sequence[tuple],
    val_items: Sequence[tuple],
    *,
    epochs: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 16,
    patience: int = 8,
    flip: bool = True,
    loc_weight: float = 1.0,
    loc_target: str = "malignant",
    pos_weight: float | None = None,
    benign_weight: float = 1.0,
    benign_pos_weight: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    train_keys: Sequence[str] | None = None,
    val_keys: Sequence[str] | None = None,
    select: str = "best_val",
    finetune_top_epochs: int = 0,
    finetune_top_lr: float = 1e-4,
) -> HeadsResult:
    """Train ``model``'s heads in place on its frozen backbone's features.

    Parameters
    ----------
    model
        An :class:`~mammolens.models.AttentionMammoNet` or baseline (``forward_features`` /
        ``forward_head``); its backbone is not changed (its batch-norm statistics neither).
    train_items, val_items
        ``(image, mask or None, label)`` in cache geometry, or ``(image, mask, label,
        benign)`` with the benign target (1 / 0, NaN unknown) for a model with the benign
        output; the validation images choose the epoch kept (best malignant AUC; the last
        epoch when validation has one class).
    epochs, lr, weight_decay, batch_size, patience
        Adam on the head parameters; stop after ``patience`` epochs without a better
        validation AUC.
    flip
        Also train (and validate) on each image's top-bottom flip.
    loc_weight, loc_target, pos_weight, benign_weight, benign_pos_weight
        As in :func:`mammolens.train.losses.mammo_loss`.
    progress
        ``progress(phase, done, total)`` while features are computed (``phase`` =
        ``"train"`` or ``"val"``).
    on_epoch
        Called with each epoch's record (``epoch``, ``loss``, ``val_auc``; with the
        benign output ``val_benign_auc`` when validation has both benign targets).
    select
        ``best_val``: keep the epoch with the best validation AUC and stop after
        ``patience`` epochs without one; ``last``: run all ``epochs`` and keep the last
        (validation AUC still reported).
    train_keys, val_keys
        A unique key per image (e.g. cache folder + image id): features are then kept in
        memory for the process and reused by later calls with the same frozen backbone
        (the folds of a cross-validation).
    finetune_top_epochs, finetune_top_lr
        After the heads: this many epochs (0: none) of Adam at ``finetune_top_lr`` on the
        heads and the backbone's top stage (:meth:`top_stage`) together, from the cached
        stride-16 maps; the last epoch is kept. The backbone's lower stages and every
        batch-norm statistic stay as they were.
    """
    from mammolens.stats import auc_score

    if epochs < 1:
        raise ConfigError("heads.epochs must be >= 1")
    if select not in ("best_val", "last"):
        raise ConfigError(f"heads.select must be best_val or last, got {select!r}")
    if not train_items:
        raise ConfigError("the heads stage has no training image")
    if finetune_top_epochs < 0:
        raise ConfigError("heads.finetune_top_epochs must be >= 0")
    top = model.backbone.top_stage() if finetune_top_epochs else None  # an unsupported trunk fails before any work
    t0 = time.perf_counter()
    model.to(device)
    lse_r = float(getattr(model, "lse_r", 5.0))

    def prog(phase: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda d, t: progress(phase, d, t))

    # one fingerprint and one NHWC round trip of the backbone for both feature passes
    fp = backbone_fingerprint(model.backbone) if train_keys is not None or val_keys is not None else None
    with _channels_last(model.backbone):
        tr = _features(model, train_items, flip=flip, device=device, progress=prog("train"), keys=train_keys, fp=fp)
        va = (_features(model, val_items, flip=False, device=device, progress=prog("val"), keys=val_keys, fp=fp)
              if val_items else None)
    t_feat = time.perf_counter() - t0
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(_head_params(model), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(tr.label)

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            yield perm[i : i + batch_size]

    def loss_of(out: dict[str, torch.Tensor], idx: torch.Tensor) -> StepOutput:
        batch = {"label": tr.label[idx], "mask": tr.mask[idx], "has_mask": tr.has_mask[idx], "benign": tr.benign[idx]}
        loss, _ = mammo_loss(out, batch, loc_weight=loc_weight, lse_r=lse_r, pos_weight=pos_weight, loc_target=loc_target,
                             benign_weight=benign_weight, benign_pos_weight=benign_pos_weight)
        return StepOutput(loss, weight=len(idx))

    def step(idx: torch.Tensor) -> StepOutput:
        return loss_of(model.forward_head({"c3": tr.c3[idx].to(device).float(), "c4": tr.c4[idx].to(device).float()}), idx)

    tuned_top: torch.nn.Module | None = None  # set for the fine-tuning epochs

    def validate(epoch: int, rec: dict[str, float]) -> dict[str, float]:
        if va is None:
            return {}
        y = va.label.numpy()
        scores, bscores = _scores(model, va, device, top=tuned_top)
        got = {"val_auc": float(auc_score(y, scores))} if len(np.unique(y)) == 2 else {}
        if bscores is not None:  # a secondary figure: the epoch is chosen by the malignant AUC
            yb = va.benign.numpy()
            known = np.isfinite(yb)
            if len(np.unique(yb[known])) == 2:
                got["val_benign_auc"] = float(auc_score(yb[known].astype(int), bscores[known]))
        return got

    def heads_state() -> dict[str, torch.Tensor]:
        return copy.deepcopy({k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")})

    res = run_epochs(
        model, epochs=epochs, batches=batches, step=step, optimizer=opt, end_epoch=validate, on_epoch=on_epoch,
        keep="last" if select == "last" else "best", monitor="val_auc", patience=patience,
        snapshot=heads_state, restore=lambda state: model.load_state_dict(state, strict=False), stage="heads stage",
    )
    history, best_val = list(res.history), res.best_score
    top_epochs_run, t_top = 0, 0.0
    if top is not None:
        t1 = time.perf_counter()
        tuned_top = top
        for p in top.parameters():
            p.requires_grad_(True)
        opt_top = torch.optim.Adam(_head_params(model) + list(top.parameters()), lr=finetune_top_lr, weight_decay=weight_decay)

        def step_top(idx: torch.Tensor) -> StepOutput:
            c3 = tr.c3[idx].to(device).float().contiguous(memory_format=torch.channels_last)
            return loss_of(model.forward_head({"c3": c3, "c4": top(c3)}), idx)

        def on_top_epoch(rec: dict[str, float]) -> None:
            rec["epoch"] += res.epochs_run
            rec["finetune_top"] = 1.0
            if on_epoch is not None:
                on_epoch(rec)

        try:
            with _channels_last(model.backbone):  # NHWC: ~3x faster backwards through depthwise blocks
                top_res = run_epochs(
                    _BackboneInEval(model), epochs=finetune_top_epochs, batches=batches, step=step_top, optimizer=opt_top,
                    end_epoch=validate, on_epoch=on_top_epoch, keep="last", stage="heads stage (top-stage fine-tuning)",
                )
        finally:
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        history += top_res.history
        best_val = top_res.history[-1].get("val_auc", best_val)
        top_epochs_run, t_top = top_res.epochs_run, time.perf_counter() - t1
    return HeadsResult(
        epochs_run=res.epochs_run, best_epoch=res.best_epoch, best_val_auc=best_val,
        seconds=time.perf_counter() - t0, seconds_features=t_feat, history=history,
        top_epochs_run=top_epochs_run, seconds_top=t_top,
    )


def _scores(model: torch.nn.Module, f: _Feats, device: str, batch_size: int = 64,
            top: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Malignant logits and (with the benign output, else ``None``) benign logits.

    With ``top`` (a fine-tuned top stage) the stride-32 maps are recomputed from the
    cached stride-16 ones.
    """
    model.eval()
    out, ben = [], []
    with torch.no_grad():
        for i in range(0, len(f.label), batch_size):
            c3 = f.c3[i : i + batch_size].to(device).float()
            c4 = f.c4[i : i + batch_size].to(device).float() if top is None else top(c3.contiguous(memory_format=torch.channels_last))
            o = model.forward_head({"c3": c3, "c4": c4})
            out.append(o["logit"].float().cpu().numpy())
            if "benign_logit" in o:
                ben.append(o["benign_logit"].float().cpu().numpy())
    return np.concatenate(out), (np.concatenate(ben) if ben else None)
