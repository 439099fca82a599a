"""The LightningModule (recipe) and DataModule (manifest + cache) of the training stage."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mammolens.config import Config, config_from_dict
from mammolens.data.dataset import MammoDataset, class_weights_sampler
from mammolens.models import create_model, model_kwargs_from_config
from mammolens.run_folder import META_KEY
from mammolens.train.loop import NonFiniteLossError, TrainingError
from mammolens.train.losses import mammo_loss

__all__ = ["EpochSeedCallback", "MammoDataModule", "MammoLitModule", "NonFiniteLossError", "TrainingError", "binary_auc", "collate"]


def binary_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (NaN when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(p, dtype=float)))


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "has_mask": torch.tensor([it["has_mask"] for it in items], dtype=torch.bool),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.float32),
        "benign": torch.tensor([it.get("benign", float("nan")) for it in items], dtype=torch.float32),
        "image_id": [it["image_id"] for it in items],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


def freeze_backbone(model: torch.nn.Module, freeze: str) -> int:
    """Hold the model's backbone weights fixed (see :func:`mammolens.models.backbone.freeze_parameters`).

    Batch-norm running statistics are left to adapt to the training images (as in AdaBN,
    Li et al. 2016): patch-pretrained statistics come from patches, not whole images.
    """
    from mammolens.models.backbone import freeze_parameters

    return freeze_parameters(model.backbone, freeze)


class MammoLitModule(pl.LightningModule):
    """The recipe: BCE (+ localisation) loss, Adam, ReduceLROnPlateau on val loss, AUC.

    Parameters
    ----------
    config
        The resolved configuration (dict of :class:`mammolens.config.Config`).
    pos_weight
        ``n_neg / n_pos`` of the training split when ``train.imbalance == "pos_weight"``.
    meta
        Run metadata (preprocessing settings, manifest hash...) stored in every checkpoint
        under ``"mammolens"`` so that a checkpoint alone can be used for prediction.
    benign_pos_weight
        ``n_neg / n_pos`` of the training split's known benign targets (the benign
        output, ``model.benign_output``, with ``train.imbalance == "pos_weight"``).
    """

    def __init__(
        self,
        config: dict[str, Any],
        pos_weight: float | None = None,
        meta: dict[str, Any] | None = None,
        benign_pos_weight: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "pos_weight": pos_weight, "benign_pos_weight": benign_pos_weight})
        self.cfg: Config = config_from_dict(config)
        self.pos_weight = pos_weight
        self.benign_pos_weight = benign_pos_weight
        self.meta = dict(meta or {})
        mc = self.cfg.model
        self.model = create_model(mc.name, pretrained=mc.pretrained, **model_kwargs_from_config(mc))
        self.loc_weight = self.cfg.train.loc_weight if mc.kind == "attention" else 0.0
        freeze_backbone(self.model, self.cfg.train.freeze)
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._val_benign: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x)

    def compute_loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        return mammo_loss(out, batch, loc_weight=self.loc_weight, lse_r=self.cfg.model.lse_r, pos_weight=self.pos_weight,
                          loc_target=self.cfg.train.loc_target, benign_weight=self.cfg.train.benign_weight,
                          benign_pos_weight=self.benign_pos_weight)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.model(batch["image"])
        loss, parts = self.compute_loss(out, batch)
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, batch {batch_idx} "
                f"(images {batch['image_id'][:4]}); stopped. Lower optim.lr, check the inputs, or use "
                f"train.precision=32; the last good checkpoint is kept"
            )
        bs = batch["image"].shape[0]
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs, sync_dist=False)
        self.log("train_cls", parts["cls"], on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("train_loc", parts["loc"], on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        if "benign" in parts:
            self.log("train_benign", parts["benign"], on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.model(batch["image"])
        loss, _ = self.compute_loss(out, batch)
        n = torch.tensor(float(batch["image"].shape[0]), device=loss.device)
        self._val.append((torch.sigmoid(out["logit"].float()).detach(), batch["label"].detach().float(), (loss.detach() * n).reshape(1)))
        if "benign_logit" in out and "benign" in batch:
            self._val_benign.append((torch.sigmoid(out["benign_logit"].float()).detach(), batch["benign"].detach().float().to(loss.device)))

    def on_validation_epoch_start(self) -> None:
        self._val = []
        self._val_benign = []

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        p = torch.cat([v[0] for v in self._val])
        y = torch.cat([v[1] for v in self._val])
        loss_sum = torch.cat([v[2] for v in self._val]).sum()
        if self.trainer.world_size > 1:
            p = self.all_gather(p).reshape(-1)
            y = self.all_gather(y).reshape(-1)
            loss_sum = self.all_gather(loss_sum).sum()
        val_loss = loss_sum / max(len(p), 1)
        auc = binary_auc(y.cpu().numpy(), p.cpu().numpy())
        self.log("val_loss", val_loss, prog_bar=True, sync_dist=False, rank_zero_only=False)
        self.log("val_auc", float(auc) if math.isfinite(auc) else 0.5, prog_bar=True, rank_zero_only=False)
        if self._val_benign:
            # a secondary figure: model selection and early stopping stay on the malignant AUC
            pb = torch.cat([v[0] for v in self._val_benign])
            yb = torch.cat([v[1] for v in self._val_benign])
            if self.trainer.world_size > 1:
                pb = self.all_gather(pb).reshape(-1)
                yb = self.all_gather(yb).reshape(-1)
            known = torch.isfinite(yb)
            bauc = binary_auc(yb[known].cpu().numpy(), pb[known].cpu().numpy()) if bool(known.any()) else float("nan")
            if math.isfinite(bauc):
                self.log("val_benign_auc", float(bauc), rank_zero_only=False)
        self._val = []
        self._val_benign = []

    def configure_optimizers(self) -> dict[str, Any]:
        oc = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=oc.lr, weight_decay=oc.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=oc.plateau_factor, patience=oc.plateau_patience, min_lr=oc.min_lr
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = self.meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.meta = dict(checkpoint.get(META_KEY, self.meta))


class EpochSeedCallback(pl.Callback):
    """Tell the training dataset the epoch, so augmentation draws depend on (seed, epoch, index)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "train_ds", None) is not None:
            dm.train_ds.set_epoch(trainer.current_epoch)


class MammoDataModule(pl.LightningDataModule):
    """Train / val loaders over the manifest's splits read from the cache."""

    def __init__(self, train_df: pd.DataFrame, val_df: pd.DataFrame, cache: Any, cfg: Config, *, pin_memory: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.pin_memory = pin_memory
        self.train_ds = MammoDataset(train_df, cache, augment_cfg=cfg.data.augment, seed=cfg.train.seed)
        self.val_ds = MammoDataset(val_df, cache, augment_cfg=None, seed=cfg.train.seed)

    def _loader(self, ds: MammoDataset, *, train: bool) -> DataLoader:
        dc = self.cfg.data
        sampler = None
        shuffle = train
        if train and self.cfg.train.imbalance == "sampler":
            sampler = class_weights_sampler(ds.labels, seed=self.cfg.train.seed)
            shuffle = False
        g = torch.Generator()
        g.manual_seed(self.cfg.train.seed)
        return DataLoader(
            ds,
            batch_size=dc.batch_size if train else dc.eval_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=dc.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate,
            drop_last=False,
            generator=g if shuffle else None,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_ds, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_ds, train=False)
