"""Inference: load a trained run, score images, write prediction tables and heatmaps."""

from mammolens.predict.api import (
    PRED_COLUMNS,
    add_rollups,
    breast_table,
    collect_inputs,
    exam_table,
    predict,
)
from mammolens.predict.predictor import ImageResult, Predictor, load_predictor, resolve_checkpoint

__all__ = [
    "PRED_COLUMNS",
    "ImageResult",
    "Predictor",
    "add_rollups",
    "breast_table",
    "collect_inputs",
    "exam_table",
    "load_predictor",
    "predict",
    "resolve_checkpoint",
]
