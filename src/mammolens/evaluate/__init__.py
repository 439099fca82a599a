"""Evaluation: predictions + manifest -> results.json, tables, figures, report.html.

Public API: :func:`evaluate` (see :mod:`mammolens.evaluate.evaluate`),
:func:`simulate_reader_study` (:mod:`mammolens.evaluate.reader_sim`).
"""

from mammolens.evaluate._common import EvaluationError, EvaluationResult
from mammolens.evaluate.evaluate import evaluate
from mammolens.evaluate.inputs import load_predictions, load_reads
from mammolens.evaluate.reader_sim import simulate_reader_study

__all__ = [
    "EvaluationError",
    "EvaluationResult",
    "evaluate",
    "load_predictions",
    "load_reads",
    "simulate_reader_study",
]
