"""The binormal reader simulation: shape, determinism, skill spread, benefit of a good AI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammolens.errors import MammolensError
from mammolens.evaluate.reader_sim import simulate_reader_study
from mammolens.stats.roc import auc_score


def _cases(n: int = 200, d_ai: float = 3.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = (rng.random(n) < 0.4).astype(int)
    ai = 1 / (1 + np.exp(-(d_ai * t - d_ai / 2 + rng.normal(0, 1, n))))
    return pd.DataFrame({"case": [f"c{i}" for i in range(n)], "truth": t, "ai_score": ai})


def test_long_format_and_determinism() -> None:
    c = _cases()
    a = simulate_reader_study(c, n_readers=4, seed=1)
    b = simulate_reader_study(c, n_readers=4, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns[:5]) == ["reader", "case", "modality", "truth", "score"]
    assert len(a) == 4 * 200 * 2
    assert set(a["modality"]) == {"unaided", "aided"}
    assert a["score"].between(0, 100).all()
    assert a.loc[a["modality"] == "unaided", "heatmap_acceptable"].isna().all()
    assert a.loc[a["modality"] == "aided", "heatmap_acceptable"].notna().all()


def test_skill_spread_and_ai_benefit() -> None:
    reads = simulate_reader_study(_cases(n=400), n_readers=6, seed=2)
    aucs = reads.groupby(["reader", "modality"]).apply(lambda d: auc_score(d["truth"], d["score"]), include_groups=False).unstack()
    assert aucs["unaided"].max() - aucs["unaided"].min() > 0.04  # readers differ in skill
    assert 0.65 < aucs["unaided"].mean() < 0.95
    assert (aucs["aided"] > aucs["unaided"]).mean() >= 0.8  # a strong AI helps most readers


def test_heatmap_hits_drive_acceptability() -> None:
    c = _cases(n=300)
    c["heatmap_hit"] = np.where(c["truth"] == 1, np.arange(300) % 2, np.nan)
    r = simulate_reader_study(c, n_readers=3, seed=0)
    r = r[(r["modality"] == "aided") & (r["truth"] == 1)].merge(c[["case", "heatmap_hit"]], on="case")
    rate = r.groupby("heatmap_hit")["heatmap_acceptable"].mean()
    assert rate[1.0] > rate[0.0] + 0.3


def test_bad_cases() -> None:
    with pytest.raises(MammolensError, match="lacks column 'ai_score'"):
        simulate_reader_study(pd.DataFrame({"case": ["a"], "truth": [1]}))
    with pytest.raises(MammolensError, match="truth must be 0/1"):
        simulate_reader_study(pd.DataFrame({"case": ["a"], "truth": [2], "ai_score": [0.5]}))
