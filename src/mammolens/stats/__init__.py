"""Statistics for diagnostic-accuracy studies: pure numpy/scipy/pandas, never torch.

Works on this system's predictions and on any other model's or reader's scores.
Result objects are frozen dataclasses with ``to_dict()``. Every invalid input raises
:class:`StatsInputError` (a ``ValueError`` and a ``MammolensError``) naming the problem.

Modules: :mod:`.roc` (ROC, AUC + DeLong / bootstrap CIs, partial AUC, DeLong tests),
:mod:`.operating` (operating points, proportions with CIs, threshold tables),
:mod:`.mcnemar`, :mod:`.levels` (image/breast/exam roll-ups), :mod:`.subgroups`,
:mod:`.mrmc` (Obuchowski-Rockette and DBM reader studies, AI vs readers) and
:mod:`.localization` (pointing game, Dice/IoU, FROC). See docs/stats.md.
"""

from mammolens.stats._validate import StatsInputError
from mammolens.stats.roc import (
    AUCComparison,
    AUCResult,
    PartialAUCResult,
    ROCCurve,
    auc_ci,
    auc_score,
    bootstrap_auc,
    delong_test,
    partial_auc,
    roc_curve,
    unpaired_auc_test,
)

__all__ = [
    "AUCComparison",
    "AUCResult",
    "PartialAUCResult",
    "ROCCurve",
    "StatsInputError",
    "auc_ci",
    "auc_score",
    "bootstrap_auc",
    "delong_test",
    "partial_auc",
    "roc_curve",
    "unpaired_auc_test",
]
