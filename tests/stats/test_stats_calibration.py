"""Calibration (reliability bins, Brier, ECE, logistic intercept/slope) and the ROC band."""

from __future__ import annotations

import numpy as np
import pytest

from mammolens.stats import StatsInputError, calibration, roc_band, roc_counts, roc_curve


def test_calibration_known_values():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.05, 0.15, 0.85, 0.95])
    r = calibration(y, s, n_bins=5)
    assert r.brier == pytest.approx(np.mean((s - y) ** 2))
    assert [b["n"] for b in r.bins] == [2, 0, 0, 0, 2]
    # bins: mean score 0.1 observed 0; mean 0.9 observed 1 -> ECE = 0.1
    assert r.ece == pytest.approx(0.1)
    assert r.bins[1]["observed"] is None and r.bins[1]["ci_low"] is None


def test_calibration_slope_of_a_calibrated_model_is_near_one():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    y = (rng.random(p.size) < p).astype(int)
    r = calibration(y, p)
    assert r.calibration_slope == pytest.approx(1.0, abs=0.08)
    assert r.calibration_intercept == pytest.approx(0.0, abs=0.08)
    assert r.ece < 0.03
    # over-confident scores: slope < 1
    logit = np.log(p / (1 - p))
    r2 = calibration(y, 1 / (1 + np.exp(-2 * logit)))
    assert r2.calibration_slope == pytest.approx(0.5, abs=0.05)
    with pytest.raises(StatsInputError):
        calibration([0, 2], [0.1, 0.2])


def test_roc_counts_is_the_curve_core():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.9, 0.5, 0.5, 0.3, 0.2])
    tp, fp, thr = roc_counts(y, s)
    c = roc_curve(y, s)
    np.testing.assert_allclose(c.tpr, tp / 3)
    np.testing.assert_allclose(c.fpr, fp / 3)
    assert thr[0] == np.inf and list(thr[1:]) == [0.9, 0.5, 0.3, 0.2, 0.1]


def test_roc_band_brackets_the_curve_and_is_seeded():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(60), np.ones(40)].astype(int)
    s = rng.normal(y * 1.5, 1)
    grid, lo, hi = roc_band(y, s, n_boot=100, seed=3)
    assert grid.shape == lo.shape == hi.shape == (101,)
    assert (lo <= hi).all() and lo[-1] == pytest.approx(1.0)
    c = roc_curve(y, s)
    tpr_at = c.tpr[np.searchsorted(c.fpr, grid, side="right") - 1]
    assert np.mean((lo <= tpr_at) & (tpr_at <= hi)) > 0.95
    again = roc_band(y, s, n_boot=100, seed=3)
    np.testing.assert_array_equal(again[1], lo)
    # too few usable replicates: an all-NaN band, not a misleading one
    _, lo2, _ = roc_band(np.r_[0, 1], np.r_[0.1, 0.9], n_boot=10)
    assert np.isnan(lo2).all()
