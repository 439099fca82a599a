"""Typed training/inference configuration loaded from YAML presets with dotted overrides.

A configuration is a :class:`Config` (pydantic) with four sections::

    model:  arch, kind, pretrained, attention_dim, score, lse_r, dropout, benign_output
    data:   batch_size, num_workers, augmentation settings
    optim:  lr, weight_decay, plateau_factor, plateau_patience, min_lr
    train:  max_epochs, early_stop_patience, seed, imbalance, loc_weight, precision,
            accelerator, devices, num_nodes, strategy, ...

Presets ship in ``mammolens/configs/*.yaml`` (``tiny``, ``paper``, ``mias``); any YAML file
with the same keys can be given instead. Overrides use dotted keys::

    load_config("tiny", ["optim.lr=3e-4", "train.max_epochs=5", "model.score=attention"])

Unknown keys and bad values raise :class:`mammolens.errors.ConfigError` naming the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mammolens.errors import ConfigError

ARCHS = ("resnet50", "resnet34", "resnet18", "tiny", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
KINDS = ("attention", "baseline")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """The network.

    ``score`` chooses the image logit of the attention model: ``attention`` (the
    attention-pooled classifier alone), ``localization`` (LSE-pooled localisation map
    alone) or ``attention+localization`` (the mean of both logits). The baseline always
    uses its global-average-pooled classifier.
    """

    #: ``resnet50|34|18``, ``tiny``, ``efficientnet_lite0|1|2`` (offline ImageNet weights) or
    #: ``timm/<name>`` (see :mod:`mammolens.models.backbone`)
    arch: str = "resnet50"
    kind: Literal["attention", "baseline"] = "attention"
    pretrained: str = "imagenet"
    attention_dim: int = Field(128, ge=1)
    score: Literal["attention", "localization", "attention+localization"] = "attention"
    lse_r: float = Field(5.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    tiny_width: int = Field(16, ge=4)
    #: a second, benign output beside the malignant one (the NYU / GMIC models' benign and
    #: malignant probabilities): its own attention pooling and classifier on the shared
    #: backbone features, trained with an independent binary target (an image can hold
    #: both kinds of finding; see :func:`mammolens.data.manifest.benign_labels`). Needs a
    #: manifest with benign findings (``outcome`` ``benign`` or benign lesions); the
    #: malignant ``logit`` stays the score every statistic uses
    benign_output: bool = False

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        if v in ARCHS or (v.startswith("timm/") and len(v) > 5):
            return v
        raise ValueError(f"unknown architecture {v!r}; choose one of {', '.join(ARCHS)} or timm/<name>")

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.arch}"


class AugmentConfig(_Section):
    """Joint image/mask augmentation (train split only); probabilities and ranges."""

    enabled: bool = True
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.5, ge=0, le=1)
    rotate_deg: float = Field(15.0, ge=0, le=180)
    rotate_p: float = Field(0.5, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, lt=1)
    brightness: float = Field(0.1, ge=0, lt=1)
    gamma: float = Field(0.2, ge=0, lt=1)
    intensity_p: float = Field(0.8, ge=0, le=1)


class DataConfig(_Section):
    #: the cache image size the preset expects (``"HxW"``); ``train`` refuses another
    cache_size: str | None = None
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(16, ge=1)
    num_workers: int = Field(0, ge=0)
    augment: AugmentConfig = AugmentConfig()


class PatchStageConfig(_Section):
    """Stage 1 of Shen et al. (2019), run by ``train`` before the whole-image stage.

    The backbone (from ``model.pretrained``, e.g. ImageNet) is fine-tuned as a classifier
    of lesion-centred against background patches cut from the training split's cached
    images (every annotated finding, benign ones included, with ``classes: 2``); the
    whole-image model then starts from it, its localisation head from the patch head.
    """

    enabled: bool = False
    patch_size: int = Field(96, ge=16)
    per_lesion: int = Field(16, ge=1)
    background_per_image: int = Field(12, ge=0)
    classes: Literal[2, 3] = 2
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)
    #: backbone weights held fixed in this stage (``early``: the generic ImageNet stages)
    freeze: Literal["none", "early", "backbone"] = "early"
    augment: bool = True


class HeadStageConfig(_Section):
    """The heads stage, run by ``train`` after the patch stage: the heads are fitted on
    the frozen backbone's features, computed once (:mod:`mammolens.train.heads`).
    ``train.max_epochs: 0`` then skips the whole-image stage."""

    enabled: bool = False
    epochs: int = Field(30, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(16, ge=1)
    patience: int = Field(8, ge=1)
    #: also train on each image's top-bottom flip
    flip: bool = True
    #: which epoch's heads are kept: ``best_val`` (highest validation AUC, early stopping
    #: after ``patience``) or ``last`` (a fixed schedule: with a handful of positive
    #: validation images the validation AUC is too noisy to choose by)
    select: Literal["best_val", "last"] = "best_val"
    #: then fine-tune the backbone's top stage (stride 16 -> 32) with the heads for this
    #: many epochs from the cached stride-16 maps (0: the trunk stays frozen); LP-FT order
    finetune_top_epochs: int = Field(0, ge=0)
    finetune_top_lr: float = Field(1e-4, gt=0)


class OptimConfig(_Section):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    plateau_patience: int = Field(3, ge=0)
    min_lr: float = Field(1e-7, ge=0)


class TrainConfig(_Section):
    #: epochs of the whole-image stage; 0 = none (the heads stage's model is the result)
    max_epochs: int = Field(50, ge=0)
    early_stop_patience: int = Field(8, ge=1)
    seed: int = 0
    imbalance: Literal["pos_weight", "sampler", "none"] = "pos_weight"
    loc_weight: float = Field(1.0, ge=0)
    #: what the localisation map is supervised with: ``malignant`` outlines only, or every
    #: annotated finding (``lesion``, benign ones included)
    loc_target: Literal["malignant", "lesion"] = "malignant"
    #: weight of the benign output's loss (``model.benign_output``) beside the malignant one
    benign_weight: float = Field(1.0, ge=0)
    #: backbone weights held fixed: ``early`` = stem..layer2, ``backbone`` = all of it (only
    #: the heads learn; batch-norm statistics still adapt). For small datasets after
    #: ``mammolens pretrain-patches`` (Shen et al. 2019's second stage with few images).
    freeze: Literal["none", "early", "backbone"] = "none"
    precision: str = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    deterministic: bool = False
    gradient_clip: float = Field(0.0, ge=0)
    accumulate_grad_batches: int = Field(1, ge=1)
    log_every_n_steps: int = Field(10, ge=1)
    limit_train_batches: float = Field(1.0, gt=0)
    torch_threads: int = Field(0, ge=0)

    @field_validator("devices", "strategy", mode="before")
    @classmethod
    def _to_str(cls, v: Any) -> str:
        if isinstance(v, list | tuple):
            return ",".join(str(x) for x in v)
        return str(v)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, v: str) -> str:
        allowed = {"auto", "32", "32-true", "16-mixed", "bf16-mixed", "64", "64-true"}
        if str(v) not in allowed:
            raise ValueError(f"precision must be one of {sorted(allowed)}")
        return str(v)


class PredictConfig(_Section):
    #: test-time augmentation: ``[vflip]`` also scores the image flipped top-bottom and
    #: averages logits and maps (images are laterality-normalised, so a left-right flip
    #: would put the chest wall on the wrong side)
    tta: list[Literal["vflip"]] = Field(default_factory=list)
    #: contralateral-difference score: ``score = sigmoid(logit - w * logit of the same view
    #: of the other breast)``; 0 = off (the image's own logit). The table always carries
    #: ``contralateral_logit``.
    contralateral: float = Field(0.0, ge=0.0, le=1.0)
    gradcam: bool = True
    overlay_kind: Literal["localization", "attention", "gradcam"] = "localization"
    overlay_max_side: int = Field(1024, ge=64)


class Config(_Section):
    """The whole configuration (saved resolved as ``RUN/config.yaml``)."""

    preset: str = ""
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    patch: PatchStageConfig = PatchStageConfig()
    heads: HeadStageConfig = HeadStageConfig()
    predict: PredictConfig = PredictConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def list_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    files = resources.files("mammolens.configs")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a configuration must be a mapping of sections")
    return data


def _preset_dict(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"{p}: configuration file not found")
        return _read_yaml(p.read_text(encoding="utf-8"), str(p)), p.stem
    name = str(name_or_path)
    res = resources.files("mammolens.configs") / f"{name}.yaml"
    if not res.is_file():
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(list_presets())} (or give a YAML path)")
    return _read_yaml(res.read_text(encoding="utf-8"), f"preset {name}"), name


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["a.b=1", ...]`` -> ``{"a.b": 1}`` (values parsed as YAML scalars)."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=3e-4)")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            out[key] = yaml.safe_load(value) if value.strip() != "" else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur: Any = d
    model: Any = Config
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            known = sorted(fields) if fields else []
            raise ConfigError(f"unknown configuration key {key!r} ({'.'.join(parts[: i + 1])!r} not in {known})")
        ann = fields[part].annotation
        if i == len(parts) - 1:
            cur[part] = value
            return
        model = ann
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt


def _format_validation(e: ValidationError, where: str) -> str:
    msgs = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            msgs.append(f"unknown key {loc!r}")
        else:
            msgs.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return f"{where}: invalid configuration: " + "; ".join(msgs)


def load_config(
    name_or_path: str | Path | Config = "tiny",
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
) -> Config:
    """Load a preset (name) or YAML file and apply dotted overrides.

    Parameters
    ----------
    name_or_path
        A preset name (``tiny``, ``paper``, ``mias``), a YAML path, or a :class:`Config`.
    overrides
        ``["section.key=value", ...]`` or a mapping of dotted keys to values.

    Raises
    ------
    ConfigError
        Unknown preset, unknown key or invalid value (the message names the key).
    """
    if isinstance(name_or_path, Config):
        data, where = name_or_path.model_dump(mode="json"), "config"
    else:
        data, preset = _preset_dict(name_or_path)
        data.setdefault("preset", preset)
        where = str(name_or_path)
    for key, value in parse_overrides(overrides).items():
        _set_dotted(data, key, value)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, where)) from None


def config_from_dict(data: Mapping[str, Any], *, where: str = "config") -> Config:
    """Validate a plain dict (e.g. from a run's ``config.yaml`` or a checkpoint)."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(_format_validation(e, where)) from None
