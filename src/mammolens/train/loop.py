"""The training loop the in-memory stages share: patch classifier, SimCLR, heads.

Three stages of :mod:`mammolens.train` train on tensors held in memory (patches cut
once, or backbone features computed once) with small models and many cheap steps: the
patch classifier (:mod:`~mammolens.train.patch_pretrain`), SimCLR
(:mod:`~mammolens.train.ssl_pretrain`) and the heads on frozen features
(:mod:`~mammolens.train.heads`). They share :func:`run_epochs`; each keeps only what is
its own: how an epoch's batches are drawn and what one step computes (its
:class:`StepOutput`). The whole-image stage (:mod:`~mammolens.train.module`) is a
LightningModule instead: it streams images from the cache through a DataLoader and needs
what Lightning gives (multi-GPU strategies, mixed precision, resumable checkpoints, the
CSV / TensorBoard logs of the run folder).

What the loop does, in this order, for every epoch ``1..epochs``::

    model.train()
    for batch in batches(epoch - 1):      # the stage draws its batch order (and augmentation)
        out = step(batch)                 # forward + loss
        optimizer.zero_grad(); out.loss.backward(); optimizer.step(); scheduler.step()
    record = {"epoch", "loss", <the step's metrics>} | end_epoch(...)   # e.g. validation
    on_epoch(record)
    keep the best (or last) state; stop after ``patience`` epochs without a better one

A non-finite loss stops training at once with :class:`NonFiniteLossError` (before the
optimiser step, so the weights are the last good ones). Every random draw belongs to the
stage (a ``torch.Generator`` its ``batches`` / ``step`` use), so a stage gives the same
result for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mammolens.errors import ConfigError, MammolensError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class TrainingError(MammolensError):
    """Training could not go on (e.g. a non-finite loss)."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good weights (or checkpoint) are kept."""


@dataclass
class StepOutput:
    """What one training step gives the loop.

    Attributes
    ----------
    loss
        The scalar loss to minimise (differentiable).
    weight
        The step's weight in the epoch's means (e.g. the batch size for per-sample means,
        1 for per-batch means).
    sums
        Metric sums over the step (e.g. ``{"accuracy": n_correct}``); the epoch record
        holds ``sum over steps / sum of weights`` for each.
    """

    loss: torch.Tensor
    weight: float = 1.0
    sums: dict[str, float] = field(default_factory=dict)


@dataclass
class LoopResult:
    """What :func:`run_epochs` did."""

    history: list[dict[str, float]]
    epochs_run: int
    steps: int
    #: the epoch whose state the model holds at the end (``keep="best"``: the best one)
    best_epoch: int
    #: the monitored value of that epoch (``None`` when there was none)
    best_score: float | None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; check ``cpu`` / ``cuda[:N]`` / ``mps``."""
    import torch

    d = str(device).strip().lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    if d not in ("cpu",) and not d.startswith("cuda") and d != "mps":
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return d


def run_epochs(
    model: torch.nn.Module,
    *,
    epochs: int,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any], StepOutput],
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    max_steps: int | None = None,
    end_epoch: Callable[[int, dict[str, float]], dict[str, float] | None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    keep: Literal["best", "last"] = "last",
    monitor: str | None = None,
    patience: int | None = None,
    snapshot: Callable[[], Any] | None = None,
    restore: Callable[[Any], None] | None = None,
    stage: str = "training",
) -> LoopResult:
    """Train ``model`` for up to ``epochs`` epochs (see the module docstring).

    Parameters
    ----------
    model
        Set to training mode at the start of every epoch and to evaluation mode at the end.
    epochs
        Number of epochs (``>= 1``).
    batches
        ``batches(epoch)`` (0-based) yields the epoch's batches; it draws their order (and
        any augmentation) from the stage's generator.
    step
        ``step(batch) -> StepOutput``: the forward pass and the loss.
    optimizer, scheduler
        The optimiser; a scheduler stepped after every optimiser step (or ``None``).
    max_steps
        Stop after this many optimiser steps (the epoch under way is still recorded).
    end_epoch
        ``end_epoch(epoch, record)`` (1-based) returns items added to the epoch's record
        (validation metrics, the learning rate...).
    on_epoch
        Called with each finished record (progress reports).
    keep
        ``last``: the model ends in its last state. ``best``: the state of the epoch with
        the highest ``record[monitor]`` is restored at the end (an epoch without the value,
        e.g. a validation set with one class, counts as better: there is nothing to choose by).
    monitor, patience
        The record key ``keep="best"`` maximises; stop after ``patience`` epochs without a
        better value (``None``: never stop early).
    snapshot, restore
        ``snapshot()`` copies the state to keep (called for every better epoch),
        ``restore(state)`` puts it back at the end; needed with ``keep="best"``.
    stage
        Named in the error of a non-finite loss.
    """
    if epochs < 1:
        raise ConfigError(f"{stage}: epochs must be >= 1, got {epochs}")
    if keep not in ("best", "last"):
        raise ConfigError(f"{stage}: keep must be best or last, got {keep!r}")
    if keep == "best" and (monitor is None or snapshot is None or restore is None):
        raise ConfigError(f"{stage}: keep='best' needs monitor, snapshot and restore")
    history: list[dict[str, float]] = []
    steps = 0
    best, best_epoch, best_state = -math.inf, 0, None
    stale = 0
    ep = 0
    for ep in range(1, epochs + 1):
        model.train()
        totals: dict[str, float] = {}
        seen: float = 0
        loss_sum = 0.0
        for batch in batches(ep - 1):
            out = step(batch)
            value = float(out.loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{stage}: non-finite training loss ({value}) at epoch {ep}, step {steps + 1}; stopped. "
                    "Lower the learning rate or check the inputs"
                )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            steps += 1
            loss_sum += value * out.weight
            for k, v in out.sums.items():
                totals[k] = totals.get(k, 0.0) + v
            seen += out.weight
            if max_steps is not None and steps >= max_steps:
                break
        rec: dict[str, float] = {"epoch": ep, "loss": loss_sum / max(1, seen)}
        rec.update({k: v / max(1, seen) for k, v in totals.items()})
        if end_epoch is not None:
            rec.update(end_epoch(ep, rec) or {})
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        score = rec.get(monitor) if monitor is not None else None
        if keep == "last" or score is None or score > best:
            best = score if score is not None else (best if keep != "last" else -math.inf)
            best_epoch, stale = ep, 0
            if keep == "best":
                best_state = snapshot()  # type: ignore[misc]
        else:
            stale += 1
            if patience is not None and stale >= patience:
                break
        if max_steps is not None and steps >= max_steps:
            break
    if best_state is not None:
        restore(best_state)  # type: ignore[misc]
    model.eval()
    return LoopResult(history, ep, steps, best_epoch, None if best == -math.inf else float(best))
