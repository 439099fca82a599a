"""The run folder and checkpoint format: one owner for what training writes and predict reads.

::

    RUN/config.yaml               the resolved configuration (``Config.to_yaml``)
    RUN/meta.json                 run metadata: manifest hash, versions, model name,
                                  ``preprocess`` (the cache's PreprocessSettings), status...
    RUN/checkpoints/best.ckpt     a PyTorch Lightning checkpoint (``torch.save`` of a dict):
    RUN/checkpoints/last.ckpt       ``state_dict``       the LightningModule's, model weights
                                                         under the ``model.`` prefix
                                    ``hyper_parameters`` ``{"config": dict, "pos_weight": float | None}``
                                    ``mammolens``        the run metadata again, so that a
                                                         checkpoint alone is enough to predict

Optional outputs: a run trained with ``model.benign_output: true`` records it in its
configuration (``hyper_parameters.config.model.benign_output``; the weights then include
the ``benign_*`` head) and lists ``"outputs": ["malignant", "benign"]`` in ``meta.json``
(``meta["benign"]``: the training split's benign counts). A run without the key (every run
before the option existed) has no benign output and loads as before.

Written by :func:`mammolens.train.train` (through ``MammoLitModule.on_save_checkpoint``) and
:func:`mammolens.serve.scoring.write_untrained_run`; read by
:func:`mammolens.predict.load_predictor`. torch is imported only to read or write a
checkpoint file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammolens.errors import CheckpointError

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
CKPT_DIR = "checkpoints"
BEST = "best.ckpt"
LAST = "last.ckpt"
#: the checkpoint a run folder stands for: the best, else the last
CKPT_NAMES = (BEST, LAST)
#: the checkpoint key holding the run metadata
META_KEY = "mammolens"
#: the prefix of the model's weights in the LightningModule's state dict
STATE_PREFIX = "model."


def resolve_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A run folder -> its ``checkpoints/best.ckpt`` (else ``last.ckpt``); a file -> itself."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        for name in CKPT_NAMES:
            for cand in (p / CKPT_DIR / name, p / name):
                if cand.is_file():
                    return cand
        raise CheckpointError(f"{p}: no checkpoint in this run folder (expected {CKPT_DIR}/{BEST} or {LAST})")
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint or run folder not found")
    return p


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to."""
    return checkpoint.parent.parent if checkpoint.parent.name == CKPT_DIR else checkpoint.parent


def read_meta(run: str | Path) -> dict[str, Any]:
    """``RUN/meta.json`` (``{}`` when missing or unreadable)."""
    p = Path(run) / META_FILE
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_meta(run: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``RUN/meta.json`` atomically."""
    p = Path(run) / META_FILE
    tmp = p.with_name(META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, p)
    return p


def write_config(run: str | Path, config_yaml: str) -> Path:
    """Write ``RUN/config.yaml`` (the resolved configuration as YAML text)."""
    p = Path(run) / CONFIG_FILE
    p.write_text(config_yaml, encoding="utf-8")
    return p


@dataclass
class RunCheckpoint:
    """The parts of a checkpoint that predict needs."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    model_state: dict[str, Any]  # the model's own keys (prefix removed)


def read_checkpoint(run_or_ckpt: str | Path) -> RunCheckpoint:
    """Read a run folder's (or a file's) checkpoint: configuration, metadata, model weights.

    The metadata come from the checkpoint, else from the run folder's ``meta.json``.

    Raises
    ------
    CheckpointError
        Missing, unreadable or foreign file (the message names it).
    """
    import torch

    path = resolve_checkpoint(run_or_ckpt)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a zip, foreign pickle...
        raise CheckpointError(f"{path}: not a readable mammolens checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise CheckpointError(f"{path}: not a mammolens checkpoint (no 'state_dict'; was it written by `mammolens train`?)")
    cfg = (ck.get("hyper_parameters") or {}).get("config")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: checkpoint has no mammolens configuration (hyper_parameters.config)")
    meta = dict(ck.get(META_KEY) or {}) or read_meta(run_dir_of(path))
    state = {k[len(STATE_PREFIX):]: v for k, v in ck["state_dict"].items() if k.startswith(STATE_PREFIX)}
    return RunCheckpoint(path=path, config=cfg, meta=meta, model_state=state)


def checkpoint_payload(
    model_state: dict[str, Any], config: dict[str, Any], meta: dict[str, Any], *, pos_weight: float | None = None
) -> dict[str, Any]:
    """A checkpoint dict in the layout training writes (for ``torch.save``) from a model's weights."""
    return {
        "state_dict": {f"{STATE_PREFIX}{k}": v for k, v in model_state.items()},
        "hyper_parameters": {"config": config, "pos_weight": pos_weight},
        META_KEY: meta,
    }


__all__ = [
    "BEST",
    "CKPT_DIR",
    "CKPT_NAMES",
    "CONFIG_FILE",
    "LAST",
    "META_FILE",
    "META_KEY",
    "STATE_PREFIX",
    "RunCheckpoint",
    "checkpoint_payload",
    "read_checkpoint",
    "read_meta",
    "resolve_checkpoint",
    "run_dir_of",
    "write_config",
    "write_meta",
]
