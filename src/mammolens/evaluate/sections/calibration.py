"""Report section: calibration (:func:`mammolens.stats.calibration.calibration`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


# ----------------------------------------------------------------------------- calibration
def calibration_section(y: np.ndarray, s: np.ndarray, *, n_bins: int = 10) -> tuple[dict[str, Any], pd.DataFrame]:
    """Reliability bins (Wilson CIs), Brier score, expected calibration error, and the
    calibration intercept/slope: :func:`mammolens.stats.calibration.calibration`."""
    from mammolens.stats.calibration import calibration

    r = calibration(y, s, n_bins=n_bins)
    return {"n": r.n, "brier": r.brier, "ece": r.ece, "calibration_intercept": r.calibration_intercept,
            "calibration_slope": r.calibration_slope, "bins": r.bins}, pd.DataFrame(r.bins)
