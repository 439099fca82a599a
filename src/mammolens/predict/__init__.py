"""Inference: load a trained run, score images, write prediction tables and heatmaps.

Modules: :mod:`.table` (the predictions table: columns, roll-ups, :class:`ImageResult`;
torch-free), :mod:`.scoring` (the batch loop), :mod:`.predictor` (the model:
:func:`load_predictor`), :mod:`.api` (:func:`predict`: inputs -> tables), plus
:mod:`.backends` / :mod:`.export` and :mod:`.dicom_results`. Names are imported on first
use, so ``import mammolens.predict.table`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PRED_COLUMNS": "table",
    "ImageResult": "table",
    "add_rollups": "table",
    "breast_table": "table",
    "exam_table": "table",
    "collect_inputs": "api",
    "predict": "api",
    "Predictor": "predictor",
    "load_predictor": "predictor",
    "resolve_checkpoint": "predictor",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'mammolens.predict' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mammolens.predict.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
