"""McNemar's test against statsmodels and Agresti's published example.

Agresti, Categorical Data Analysis (2nd ed. 2002, Table 10.1; 3rd ed. sec. 11.1):
presidential approval of 1600 people at two surveys: (794, 150 / 86, 570). McNemar's
z = (86 - 150) / sqrt(86 + 150) = -4.17, z^2 = 17.36 (no continuity correction), p < 0.001.
"""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from mammolens.stats import StatsInputError, mcnemar_from_counts, mcnemar_test

AGRESTI = np.array([[794, 150], [86, 570]])


def _pairs(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for i in (0, 1):
        for j in (0, 1):
            n = int(table[i, j])
            a += [1 - i] * n  # row 0 = "approve" = 1
            b += [1 - j] * n
    return np.array(a), np.array(b)


def test_agresti_published_statistic():
    a, b = _pairs(AGRESTI)
    r = mcnemar_test(a, b, method="chi2", correction=False)
    assert (r.b, r.c) == (150, 86)
    assert round(r.statistic, 2) == 17.36
    ref = sm_mcnemar(AGRESTI, exact=False, correction=False)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-10)


@pytest.mark.parametrize("table", [AGRESTI, np.array([[10, 3], [9, 20]]), np.array([[5, 0], [4, 5]]), np.array([[30, 20], [12, 7]])])
def test_matches_statsmodels(table):
    a, b = _pairs(table)
    for exact in (True, False):
        for corr in (True, False):
            ref = sm_mcnemar(table, exact=exact, correction=corr)
            r = mcnemar_test(a, b, method="exact" if exact else "chi2", correction=corr)
            assert r.statistic == pytest.approx(ref.statistic, rel=1e-12, abs=1e-12)
            assert r.p_value == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-12)


def test_auto_rule():
    assert mcnemar_from_counts(10, 14).method == "exact"  # b + c = 24 < 25
    assert mcnemar_from_counts(10, 15).method == "chi2"
    r = mcnemar_from_counts(0, 0)
    assert r.p_value == 1.0 and r.statistic == 0.0


def test_subsets_compare_sensitivity_and_specificity():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    a = np.array([1, 1, 1, 0, 0, 0, 1, 1])
    b = np.array([1, 0, 0, 0, 0, 1, 1, 1])
    pos = mcnemar_test(a, b, y_true=y, subset="positives")
    assert (pos.b, pos.c, pos.n) == (2, 0, 4)  # A detects 2 cancers B misses
    neg = mcnemar_test(a, b, y_true=y, subset="negatives")
    assert (neg.b, neg.c, neg.n) == (1, 0, 4)  # A clears a negative that B calls positive
    allc = mcnemar_test(a, b, y_true=y)
    assert (allc.b, allc.c) == (3, 0)  # correctness: 2 positives + 1 negative
    with pytest.raises(StatsInputError, match="needs y_true"):
        mcnemar_test(a, b, subset="positives")
    with pytest.raises(StatsInputError, match="length"):
        mcnemar_test(a, b[:5])
    with pytest.raises(StatsInputError, match="0/1"):
        mcnemar_test(a, b * 2)
