"""``train()``: manifest + cache + config -> a run folder with checkpoints and logs.

Run folder layout::

    RUN/config.yaml                 the resolved configuration
    RUN/meta.json                   manifest hash, package/torch versions, model name,
                                    preprocessing settings, split sizes, status, best AUC
    RUN/checkpoints/best.ckpt       highest validation AUC
    RUN/checkpoints/last.ckpt       end of the last finished epoch (for --resume)
    RUN/metrics.csv                 per-step / per-epoch metrics (CSV logger)
    RUN/tensorboard/                TensorBoard event files
    RUN/qc.csv                      images left out (not in the cache)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens import __version__
from mammolens.config import Config, config_from_dict, load_config, parse_overrides
from mammolens.data.manifest import (
    benign_labels,
    check_no_leakage,
    manifest_hash,
    read_manifest,
    subset_split,
    validate_manifest,
)
from mammolens.errors import ConfigError, ManifestError
from mammolens.qc import QCTable
from mammolens.run_folder import BEST, CKPT_DIR, CONFIG_FILE, LAST, read_meta, write_meta


@dataclass
class TrainResult:
    """What :func:`train` returns (also the JSON of ``mammolens train --json``)."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best_val_auc: float | None
    epochs_run: int
    model: str
    stopped_early: bool
    status: str
    n_train: int
    n_val: int
    seconds: float
    qc_path: Path | None = None
    excluded: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("run_dir", "best_checkpoint", "last_checkpoint", "qc_path"):
            d[k] = None if d[k] is None else str(d[k])
        return d


def _resolve_model_choice(cfg: Config, model: str | None) -> Config:
    if not model:
        return cfg
    m = model.strip()
    if m in ("attention", "baseline"):
        return load_config(cfg, {"model.kind": m})
    if "_" in m:
        kind, arch = m.split("_", 1)
        return load_config(cfg, {"model.kind": kind, "model.arch": arch})
    raise ConfigError(f"--model must be attention, baseline or a model name like attention_resnet50, got {model!r}")


def _resolve_device(cfg: Config, device: str | None) -> Config:
    if not device or device == "auto":
        return cfg
    if device == "cpu":
        return load_config(cfg, {"train.accelerator": "cpu", "train.devices": "1"})
    if device in ("cuda", "gpu"):
        return load_config(cfg, {"train.accelerator": "gpu"})
    raise ConfigError(f"--device must be cpu, cuda or auto, got {device!r}")


def _precision(cfg: Config, accelerator: str) -> str:
    p = cfg.train.precision
    if p != "auto":
        return {"32": "32-true", "64": "64-true"}.get(p, p)
    if accelerator in ("gpu", "cuda"):
        import torch

        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _accelerator(cfg: Config) -> str:
    import torch

    a = cfg.train.accelerator
    if a == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if a == "cuda":
        a = "gpu"
    if a == "gpu" and not torch.cuda.is_available():
        raise ConfigError("GPU training asked for (--device cuda / train.accelerator=gpu) but no CUDA device is available")
    return a


def _devices(cfg: Config) -> Any:
    d = str(cfg.train.devices)
    if d == "auto":
        return "auto"
    if d.lstrip("-").isdigit():
        return int(d)
    return [int(x) for x in d.split(",")]


def _check_split(df: pd.DataFrame, split: str) -> pd.DataFrame:
    d = subset_split(df, split)
    lab = d["label"]
    if lab.isna().all():
        raise ManifestError(f"split {split!r} has no labels (column 'label' is empty): training needs 0/1 labels")
    if lab.isna().any():
        ids = list(d.loc[lab.isna(), "image_id"][:5])
        raise ManifestError(f"split {split!r} has {int(lab.isna().sum())} image(s) without a label, e.g. {ids}; label them or move them out of the split")
    classes = sorted(int(x) for x in lab.unique())
    if len(classes) < 2:
        raise ManifestError(
            f"split {split!r} has only class {classes[0]} ({len(d)} images); training and validation AUC need both "
            f"malignant (1) and non-malignant (0) images: re-split with stratification"
        )
    return d


def _history(run: Path) -> list[dict[str, Any]]:
    f = run / "metrics.csv"
    if not f.exists():
        return []
    try:
        m = pd.read_csv(f)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return []
    cols = [c for c in ("epoch", "val_auc", "val_benign_auc", "val_loss", "train_loss_epoch", "lr-Adam") if c in m.columns]
    if "val_auc" not in m.columns or "epoch" not in m.columns:
        return []
    m = m[cols].copy()
    # the learning rate is logged at the start of an epoch, before the epoch column is set
    if "lr-Adam" in m.columns:
        m["lr-Adam"] = m["lr-Adam"].ffill()
    ep = m[m["epoch"].notna()].groupby("epoch", as_index=False).last()
    ep = ep[ep["val_auc"].notna()]
    ep["epoch"] = ep["epoch"].astype(int)
    return [{k: (None if (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()} for r in ep.to_dict("records")]


def _appending_csv_writer(run: Path) -> Any:
    """Lightning's CSV writer, but keeping (and appending to) an existing metrics.csv.

    The stock writer deletes the file when its folder is not empty, which would lose the
    history of a resumed run.
    """
    import csv

    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class _AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if os.path.isfile(self.metrics_file_path):
                with open(self.metrics_file_path, newline="") as fh:
                    header = next(csv.reader(fh), [])
                self.metrics_keys = list(header)

    return _AppendingWriter(log_dir=str(run))


def _quiet_lightning() -> None:
    import pytorch_lightning  # noqa: F401 - its import configures these loggers; quieten afterwards
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*smaller than the logging interval.*")


def check_cache_size(cfg: Config, cache_obj: Any, *, manifest: Path | None = None) -> None:
    """Refuse a cache whose image size is not the one the preset names (``data.cache_size``)."""
    want = cfg.data.cache_size
    settings = getattr(cache_obj, "settings", None)
    if not want or settings is None:
        return
    from mammolens.data.preprocess_settings import parse_size

    try:
        h, w = parse_size(want)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data.cache_size must be HxW (e.g. 1024x832), got {want!r} ({e})") from None
    have = tuple(int(x) for x in settings.size)
    if have != (h, w):
        root = getattr(cache_obj, "root", "CACHE")
        preset = cfg.preset or "this configuration"
        raise ConfigError(
            f"{root}: the cache holds {have[0]}x{have[1]} images but {preset} expects {h}x{w}; run "
            f"`mammolens preprocess {manifest or 'MANIFEST'} --out {Path(str(root)).name}_{h}x{w} --size {h}x{w}` "
            f"and train on that cache (or --set data.cache_size={have[0]}x{have[1]} to override)"
        )


PATCH_DIR = "patch_stage"
PATCH_WEIGHTS = "weights.pt"


def _patch_stage(cfg: Config, df: pd.DataFrame, cache_obj: Any, run: Path, mhash: str, *, progress: bool) -> tuple[Config, dict[str, Any]]:
    """Run (or reuse, when a finished one for this manifest exists) the patch stage; the
    whole-image model then starts from its weights."""
    from mammolens.train.patch_stage import pretrain_patches_from_cache

    pc = cfg.patch
    out = run / PATCH_DIR / PATCH_WEIGHTS
    report = out.with_suffix(".json")
    settings = {k: v for k, v in pc.model_dump(mode="json").items() if k != "enabled"}
    settings.update(arch=cfg.model.arch, init=str(cfg.model.pretrained), seed=cfg.train.seed, manifest_hash=mhash)
    if out.exists() and report.exists():
        try:
            done = json.loads(report.read_text(encoding="utf-8")).get("train_stage_settings")
        except (OSError, ValueError):
            done = None
        if done == settings:
            return load_config(cfg, {"model.pretrained": str(out)}), {"weights": str(out), "reused": True, **settings}
    cb = None
    if progress:
        from mammolens.progress import stderr_console

        console = stderr_console()

        def cb(rec: dict[str, float]) -> None:
            console.print(f"patch stage: epoch {int(rec['epoch'])}/{pc.epochs} loss {rec['loss']:.4f} accuracy {rec['accuracy']:.3f}")

    res = pretrain_patches_from_cache(
        df, cache_obj, out, arch=cfg.model.arch, tiny_width=cfg.model.tiny_width, init=cfg.model.pretrained,
        patch_size=pc.patch_size, per_lesion=pc.per_lesion, background_per_image=pc.background_per_image,
        classes=pc.classes, epochs=pc.epochs, batch_size=pc.batch_size, lr=pc.lr, augment=pc.augment,
        seed=cfg.train.seed, freeze=pc.freeze, progress=cb,
        device="cuda" if _accelerator(cfg) == "gpu" else "cpu",
    )
    rep = json.loads(report.read_text(encoding="utf-8"))
    rep["train_stage_settings"] = settings
    report.write_text(json.dumps(rep, indent=2), encoding="utf-8")
    info = {"weights": str(out), "reused": False, "n_patches": res.n_patches, "seconds": round(res.seconds, 1), **settings}
    return load_config(cfg, {"model.pretrained": str(out)}), info


def _benign_targets(cfg: Config, train_df: pd.DataFrame, *, where: str) -> tuple[float | None, dict[str, Any] | None]:
    """Check that the training split can train the benign output; its pos_weight and counts.

    Raises
    ------
    ManifestError
        ``model.benign_output`` is on but the training split has no benign finding, or no
        image known to be free of one.
    """
    if not cfg.model.benign_output:
        return None, None
    b = benign_labels(train_df)
    n_pos, n_neg = int((b == 1).sum()), int((b == 0).sum())
    if n_pos == 0 or n_neg == 0:
        what = "no benign finding" if n_pos == 0 else "no image known to be free of benign findings"
        raise ManifestError(
            f"{where}: model.benign_output is on but the train split has {what} (benign: outcome 'benign' or a lesion "
            f"with pathology 'benign'; not benign: outcome 'normal' or 'malignant'); turn it off or use a manifest with "
            f"benign labels"
        )
    pw = (n_neg / n_pos) if cfg.train.imbalance == "pos_weight" else None
    return pw, {"n_train_benign": n_pos, "n_train_not_benign": n_neg, "n_train_benign_unknown": int(b.isna().sum()),
                "benign_pos_weight": pw}


def _heads_stage(cfg: Config, module: Any, train_df: pd.DataFrame, val_df: pd.DataFrame, cache_obj: Any,
                 pos_weight: float | None, accelerator: str, *, progress: bool,
                 benign_pos_weight: float | None = None) -> dict[str, Any]:
    """Fit the heads on the frozen backbone's features (:mod:`mammolens.train.heads`)."""
    from mammolens.train.heads import fit_heads

    def items(d: pd.DataFrame) -> list[tuple[Any, Any, int, float]]:
        out = []
        ben = benign_labels(d).astype("Float64").to_numpy(dtype=float, na_value=float("nan"))
        for iid, y, b in zip(d["image_id"].astype(str), d["label"].astype(int), ben, strict=True):
            img, mask, _ = cache_obj.load(iid)
            out.append((img, mask, int(y), float(b)))
        return out

    hc = cfg.heads
    console = None
    if progress:
        from mammolens.progress import stderr_console

        console = stderr_console()
    root = str(getattr(cache_obj, "root", id(cache_obj)))
    res = fit_heads(
        module.model, items(train_df), items(val_df),
        train_keys=[f"{root}::{i}" for i in train_df["image_id"].astype(str)],
        val_keys=[f"{root}::{i}" for i in val_df["image_id"].astype(str)], epochs=hc.epochs, lr=hc.lr, weight_decay=hc.weight_decay,
        batch_size=hc.batch_size, patience=hc.patience, flip=hc.flip, select=hc.select, loc_weight=cfg.train.loc_weight,
        finetune_top_epochs=hc.finetune_top_epochs, finetune_top_lr=hc.finetune_top_lr,
        loc_target=cfg.train.loc_target, pos_weight=pos_weight, seed=cfg.train.seed,
        benign_weight=cfg.train.benign_weight, benign_pos_weight=benign_pos_weight,
        device="cuda" if accelerator == "gpu" else "cpu",
        on_epoch=None if console is None else (
            lambda r: console.print(f"heads stage: epoch {int(r['epoch'])}/{hc.epochs + hc.finetune_top_epochs}"
                                    + (" (top stage fine-tuned)" if r.get("finetune_top") else "") + f" loss {r['loss']:.4f}"
                                    + (f" val AUC {r['val_auc']:.3f}" if "val_auc" in r else "")
                                    + (f" (benign {r['val_benign_auc']:.3f})" if "val_benign_auc" in r else ""))),
    )
    return {"epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "best_val_auc": res.best_val_auc,
            "seconds": round(res.seconds, 1), "seconds_features": round(res.seconds_features, 1), "history": res.history,
            "finetune_top_epochs_run": res.top_epochs_run, "seconds_finetune_top": round(res.seconds_top, 1)}


def _finish_without_whole_image_stage(module: Any, cfg: Config, meta: dict[str, Any], run: Path, ckdir: Path,
                                      heads: dict[str, Any], train_df: pd.DataFrame, val_df: pd.DataFrame,
                                      qc_path: Path | None, excluded: int, t0: float, pos_weight: float | None) -> TrainResult:
    """The run is the heads stage's model: write best/last checkpoints in training's layout."""
    import torch

    from mammolens.run_folder import checkpoint_payload

    meta.update(status="completed", epochs_run=0, best_val_auc=heads["best_val_auc"],
                best_checkpoint=str(ckdir / BEST), seconds=round(time.perf_counter() - t0, 1))
    payload = checkpoint_payload(module.model.state_dict(), cfg.model_dump(mode="json"), meta, pos_weight=pos_weight)
    payload["hyper_parameters"]["benign_pos_weight"] = module.benign_pos_weight
    for name in (BEST, LAST):
        tmp = ckdir / (name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, ckdir / name)
    write_meta(run, meta)
    return TrainResult(
        run_dir=run, best_checkpoint=ckdir / BEST, last_checkpoint=ckdir / LAST, best_val_auc=heads["best_val_auc"],
        epochs_run=0, model=cfg.model.name, stopped_early=False, status="completed", n_train=len(train_df),
        n_val=len(val_df), seconds=round(time.perf_counter() - t0, 1), qc_path=qc_path, excluded=excluded,
        history=[dict(h) for h in heads["history"]],
    )


def train(
    manifest: str | Path | pd.DataFrame,
    cache: Any,
    *,
    config: str | Path | Config = "tiny",
    out: str | Path,
    model: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a model on the manifest's ``train`` split, validating on ``val``.

    Parameters
    ----------
    manifest
        Manifest path or DataFrame with ``split`` (train/val) and 0/1 ``label``.
    cache
        Cache folder (or an opened :class:`mammolens.data.cache.Cache`) holding the images.
    config
        Preset name (``tiny``, ``paper``, ``mias``), YAML path or :class:`Config`.
    out
        The run folder.
    model
        ``attention`` or ``baseline`` (sets ``model.kind``) or a full model name.
    overrides
        Dotted ``key=value`` overrides (``--set``).
    resume
        Continue from ``RUN/checkpoints/last.ckpt`` with the run's saved configuration
        (``overrides`` may still change e.g. ``train.max_epochs``).
    device
        ``cpu``, ``cuda`` or ``auto``.
    progress
        Show rich progress bars with live loss and AUC.

    Returns
    -------
    TrainResult

    Raises
    ------
    LeakageError, ManifestError
        A patient in two splits; no labels; an empty split; a split with one class.
    ConfigError
        Bad configuration, or a run folder that holds a run while ``resume`` is off.
    NonFiniteLossError
        The loss became NaN/inf (the last good checkpoint is kept).
    """
    t0 = time.perf_counter()
    import torch

    _quiet_lightning()
    run = Path(out)
    ckdir = run / CKPT_DIR
    last = ckdir / LAST
    old_meta = read_meta(run)

    # -- configuration ---------------------------------------------------------------
    if resume:
        if not last.exists():
            raise ConfigError(f"{run}: nothing to resume (no {CKPT_DIR}/{LAST}); start a new run without --resume")
        saved = run / CONFIG_FILE
        if not saved.exists():
            raise ConfigError(f"{saved}: the run's configuration is missing; cannot resume")
        import yaml

        cfg = config_from_dict(yaml.safe_load(saved.read_text(encoding="utf-8")), where=str(saved))
        if overrides:
            cfg = load_config(cfg, parse_overrides(overrides))
    else:
        if last.exists():
            raise ConfigError(f"{run}: already holds a run ({CKPT_DIR}/{LAST}); use --resume to continue it or choose a new --out")
        cfg = load_config(config, overrides)
        cfg = _resolve_model_choice(cfg, model)
    cfg = _resolve_device(cfg, device)
    threads_before = torch.get_num_threads()
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    try:
        return _train(cfg, manifest, cache, run, ckdir, last, old_meta, resume=resume, progress=progress, t0=t0)
    finally:
        torch.set_num_threads(threads_before)


def _train(
    cfg: Config,
    manifest: str | Path | pd.DataFrame,
    cache: Any,
    run: Path,
    ckdir: Path,
    last: Path,
    old_meta: dict[str, Any],
    *,
    resume: bool,
    progress: bool,
    t0: float,
) -> TrainResult:
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from mammolens.data.cache import open_cache
    from mammolens.train.module import (
        EpochSeedCallback,
        MammoDataModule,
        MammoLitModule,
        NonFiniteLossError,
    )

    # -- data --------------------------------------------------------------------------
    if isinstance(manifest, pd.DataFrame):
        df = validate_manifest(manifest)
        mpath = None
    else:
        df = read_manifest(manifest)
        mpath = Path(manifest)
    check_no_leakage(df)
    if df["label"].isna().all():
        raise ManifestError(f"{mpath or 'manifest'}: has no labels (column 'label' is empty): training needs 0/1 labels")
    cache_obj = open_cache(cache) if isinstance(cache, str | Path) else cache
    qc = QCTable()
    parts = {}
    for split in ("train", "val"):
        d = _check_split(df, split)
        ok = d["image_id"].astype(str).map(lambda i: i in cache_obj)
        for _, r in d[~ok].iterrows():
            qc.add("train", r["path"], f"not in the cache (missing or rejected by preprocessing) [{split}]", image_id=r["image_id"])
        d = d[ok]
        if d.empty:
            raise ManifestError(f"split {split!r}: none of its images is in the cache {getattr(cache_obj, 'root', cache)}; run `mammolens preprocess` on this manifest")
        parts[split] = _check_split(d, split)
    train_df, val_df = parts["train"], parts["val"]
    mhash = manifest_hash(df)
    if resume and old_meta.get("manifest_hash") and old_meta["manifest_hash"] != mhash:
        raise ConfigError(f"{run}: the manifest changed since this run started (hash {old_meta['manifest_hash'][:12]} -> {mhash[:12]}); cannot resume")
    check_cache_size(cfg, cache_obj, manifest=mpath)
    patch_info = None
    if cfg.patch.enabled and not resume:
        cfg, patch_info = _patch_stage(cfg, df, cache_obj, run, mhash, progress=progress)

    y = train_df["label"].astype(int).to_numpy()
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    pos_weight = (n_neg / n_pos) if cfg.train.imbalance == "pos_weight" else None
    benign_pos_weight, benign_info = _benign_targets(cfg, train_df, where=str(mpath or "manifest"))

    settings = getattr(cache_obj, "settings", None)
    settings_d = settings.model_dump(mode="json") if hasattr(settings, "model_dump") else settings
    accelerator = _accelerator(cfg)
    precision = _precision(cfg, accelerator)
    meta: dict[str, Any] = {
        "package": "mammolens",
        "version": __version__,
        "torch": str(torch.__version__),
        "pytorch_lightning": pl.__version__,
        "model": cfg.model.name,
        "manifest": str(mpath) if mpath else None,
        "manifest_hash": mhash,
        "cache": str(getattr(cache_obj, "root", cache)),
        "preprocess": settings_d,
        "image_size": list(settings_d["size"]) if isinstance(settings_d, dict) and "size" in settings_d else None,
        "n_train": len(train_df),
        "n_val": len(val_df),
        "n_train_pos": n_pos,
        "n_val_pos": int(val_df["label"].astype(int).sum()),
        "pos_weight": pos_weight,
        "accelerator": accelerator,
        "precision": precision,
        "created": old_meta.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "running",
        "patch_stage": patch_info if patch_info is not None else old_meta.get("patch_stage"),
        # the model's outputs: predict writes benign_score only for a run with "benign"
        "outputs": ["malignant", "benign"] if cfg.model.benign_output else ["malignant"],
    }
    if benign_info is not None:
        meta["benign"] = benign_info
    meta = json.loads(json.dumps(meta, default=str))  # plain types only (safe checkpoint loading)
    run.mkdir(parents=True, exist_ok=True)
    ckdir.mkdir(exist_ok=True)
    (run / CONFIG_FILE).write_text(cfg.to_yaml(), encoding="utf-8")
    write_meta(run, meta)
    qc_path = qc.write_csv(run / "qc.csv") if len(qc) else None

    # -- trainer -------------------------------------------------------------------------
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    module = MammoLitModule(cfg.model_dump(mode="json"), pos_weight=pos_weight, meta=meta, benign_pos_weight=benign_pos_weight)
    if cfg.heads.enabled and not resume:
        heads = _heads_stage(cfg, module, train_df, val_df, cache_obj, pos_weight, accelerator, progress=progress,
                             benign_pos_weight=benign_pos_weight)
        meta["heads_stage"] = heads
        module.meta = meta
        write_meta(run, meta)
        if cfg.train.max_epochs == 0:
            return _finish_without_whole_image_stage(module, cfg, meta, run, ckdir, heads, train_df, val_df, qc_path, len(qc), t0, pos_weight)
    elif cfg.train.max_epochs == 0:
        raise ConfigError("train.max_epochs=0 (no whole-image stage) needs the heads stage (heads.enabled=true)")
    dm = MammoDataModule(train_df, val_df, cache_obj, cfg, pin_memory=accelerator == "gpu")
    ck_best = ModelCheckpoint(
        dirpath=ckdir, filename="best", monitor="val_auc", mode="max", save_top_k=1, save_last=True, enable_version_counter=False
    )
    ck_best.CHECKPOINT_NAME_LAST = "last"
    early = EarlyStopping(monitor="val_auc", mode="max", patience=cfg.train.early_stop_patience)
    callbacks: list[Any] = [ck_best, early, LearningRateMonitor(logging_interval="epoch"), EpochSeedCallback()]
    if progress:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    csv_logger = CSVLogger(save_dir=run, name="", version="")
    csv_logger._experiment = _appending_csv_writer(run)
    loggers = [csv_logger, TensorBoardLogger(save_dir=run, name="tensorboard", version="", default_hp_metric=False)]
    n_nodes = cfg.train.num_nodes
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=_devices(cfg),
        num_nodes=n_nodes,
        strategy=cfg.train.strategy,
        precision=precision,
        max_epochs=cfg.train.max_epochs,
        callbacks=callbacks,
        logger=loggers,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.train.log_every_n_steps,
        deterministic=cfg.train.deterministic,
        gradient_clip_val=cfg.train.gradient_clip or None,
        accumulate_grad_batches=cfg.train.accumulate_grad_batches,
        limit_train_batches=cfg.train.limit_train_batches,
        default_root_dir=run,
    )
    status = "completed"
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)
    except NonFiniteLossError as e:
        meta.update(status="failed: non-finite loss", error=str(e), last_good_checkpoint=str(last) if last.exists() else None)
        write_meta(run, meta)
        raise NonFiniteLossError(f"{run}: {e}" + (f" ({last})" if last.exists() else " (no checkpoint was saved yet)")) from None
    except KeyboardInterrupt:
        meta.update(status="interrupted")
        write_meta(run, meta)
        raise
    if trainer.interrupted:
        meta.update(status="interrupted")
        write_meta(run, meta)
        raise KeyboardInterrupt
    stopped_early = bool(early.stopped_epoch) and trainer.current_epoch < cfg.train.max_epochs
    if stopped_early:
        status = "early_stopped"
    best = Path(ck_best.best_model_path) if ck_best.best_model_path else None
    if best is not None and best.exists() and best.name != BEST:
        best = best.rename(ckdir / BEST)
    best_auc = float(ck_best.best_model_score) if ck_best.best_model_score is not None else None
    history = _history(run)
    meta.update(
        status=status,
        epochs_run=int(trainer.current_epoch),
        best_val_auc=best_auc,
        best_checkpoint=str(best) if best else None,
        seconds=round(time.perf_counter() - t0 + float(old_meta.get("seconds", 0) if resume else 0), 1),
    )
    write_meta(run, meta)
    return TrainResult(
        run_dir=run,
        best_checkpoint=best,
        last_checkpoint=last if last.exists() else None,
        best_val_auc=best_auc,
        epochs_run=int(trainer.current_epoch),
        model=cfg.model.name,
        stopped_early=stopped_early,
        status=status,
        n_train=len(train_df),
        n_val=len(val_df),
        seconds=round(time.perf_counter() - t0, 1),
        qc_path=qc_path,
        excluded=len(qc),
        history=history,
    )

