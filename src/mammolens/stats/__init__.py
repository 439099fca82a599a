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
from mammolens.stats.calibration import CalibrationResult, calibration
from mammolens.stats.levels import LEVELS, add_level_scores, aggregate_scores, level_keys
from mammolens.stats.localization import (
    FROCResult,
    LocalizationResult,
    choose_threshold,
    dice,
    froc,
    hit_rate,
    iou,
    local_maxima,
    pointing_hit,
    score_localization,
)
from mammolens.stats.mcnemar import McNemarResult, mcnemar_from_counts, mcnemar_test
from mammolens.stats.mrmc import AIvsReadersResult, MRMCResult, ai_vs_readers, mrmc
from mammolens.stats.operating import (
    OperatingPoint,
    Proportion,
    apply_threshold,
    binary_metrics,
    operating_point,
    proportion_ci,
    threshold_table,
)
from mammolens.stats.roc import (
    AUCComparison,
    AUCResult,
    PartialAUCResult,
    ROCCurve,
    auc_ci,
    auc_score,
    bootstrap_auc,
    delong_test,
    hanley_mcneil_se,
    partial_auc,
    roc_band,
    roc_counts,
    roc_curve,
    unpaired_auc_test,
)
from mammolens.stats.subgroups import SubgroupResult, age_bands, cochran_q, subgroup_analysis

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
    "hanley_mcneil_se",
    "partial_auc",
    "roc_band",
    "roc_counts",
    "roc_curve",
    "unpaired_auc_test",
    "CalibrationResult",
    "calibration",
    "LEVELS",
    "add_level_scores",
    "aggregate_scores",
    "level_keys",
    "FROCResult",
    "LocalizationResult",
    "choose_threshold",
    "dice",
    "froc",
    "hit_rate",
    "score_localization",
    "iou",
    "local_maxima",
    "pointing_hit",
    "McNemarResult",
    "mcnemar_from_counts",
    "mcnemar_test",
    "AIvsReadersResult",
    "MRMCResult",
    "ai_vs_readers",
    "mrmc",
    "OperatingPoint",
    "Proportion",
    "apply_threshold",
    "binary_metrics",
    "operating_point",
    "proportion_ci",
    "threshold_table",
    "SubgroupResult",
    "age_bands",
    "cochran_q",
    "subgroup_analysis",
]
