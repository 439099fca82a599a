"""Simulated reader studies: synthetic radiologists reading unaided, then aided by the AI.

The simulation is a binormal latent-variable model (Dorfman-Berbaum-Metz style; see
Roe & Metz 1997, "Dorfman-Berbaum-Metz method for statistical analysis of multireader,
multimodality ROC data: validation with computer simulation", *Acad Radiol* 4:298-303).
For reader ``r`` and case ``c`` with truth ``t_c`` (1 malignant) the unaided latent score is::

    z_rc = d_r * t_c + s_c + e_rc,      s_c ~ N(0, var_case),  e_rc ~ N(0, var_reader)

with a reader-specific separation ``d_r`` (skill) drawn between ``skill_range``; the shared
case effect ``s_c`` makes readers agree about hard cases, as real readers do. The aided score
is a weighted combination of the reader's own latent score and the (standardised) AI score::

    z'_rc = (1 - w_r) * z_rc + w_r * k * a_c + f_rc,      f_rc ~ N(0, var_refresh)

where ``a_c`` is the AI score on the logit scale, centred and scaled to unit variance, ``k``
matches its class separation to the readers' scale, and ``w_r`` (reliance on the AI) is
larger for weaker readers. Scores are reported as probabilities of malignancy on a
0-100 scale (``100 * sigmoid(z)``), the continuous rating many reader studies collect.

With ``rate_heatmaps`` each aided read of a case also carries ``heatmap_acceptable`` (0/1):
a reader accepts a heatmap with probability ``p_hit`` when it points at the lesion (or,
for cases without cancer, when the AI score is low), ``p_miss`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mammolens.errors import MammolensError

#: the two modalities, in the order a reader study reads them
MODALITIES = ("unaided", "aided")
READS_COLUMNS = ["reader", "case", "modality", "truth", "score"]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def simulate_reader_study(
    cases: pd.DataFrame,
    *,
    n_readers: int = 5,
    seed: int = 0,
    skill_range: tuple[float, float] = (1.0, 2.2),
    var_case: float = 0.3,
    var_reader: float = 0.7,
    var_refresh: float = 0.15,
    reliance_range: tuple[float, float] = (0.2, 0.6),
    rate_heatmaps: bool = True,
    p_hit: float = 0.85,
    p_miss: float = 0.3,
) -> pd.DataFrame:
    """Simulate reads of ``cases`` by ``n_readers`` readers, unaided then aided.

    Parameters
    ----------
    cases
        One row per case with columns ``case`` (id), ``truth`` (0/1) and ``ai_score``
        (the model's probability in [0, 1]); optional ``heatmap_hit`` (0/1/NaN: does the
        heatmap point at the lesion) drives the acceptability ratings of malignant cases.
    n_readers
        Number of synthetic readers (at least 2 for an MRMC analysis).
    seed
        Random seed; the same inputs and seed give the same reads.
    skill_range
        Reader separations ``d_r`` are spread evenly over this range (then shuffled), so the
        panel has a realistic skill spread (unaided AUCs of roughly 0.75-0.92).
    var_case, var_reader, var_refresh
        Variance of the shared case effect, of each reader's own noise, and of the fresh
        noise of the aided read.
    reliance_range
        Weight given to the AI score: the weakest reader gets the top of the range.
    rate_heatmaps
        Add a ``heatmap_acceptable`` column (aided reads only; empty for unaided reads).
    p_hit, p_miss
        Probability that a reader rates a heatmap acceptable when it is right / wrong.

    Returns
    -------
    pandas.DataFrame
        Long format ``reader, case, modality, truth, score`` (+ ``heatmap_acceptable``),
        one row per reader x case x modality, as :func:`mammolens.stats.mrmc` reads it.
    """
    for col in ("case", "truth", "ai_score"):
        if col not in cases.columns:
            raise MammolensError(f"reader simulation: cases table lacks column {col!r}")
    if n_readers < 1:
        raise MammolensError("reader simulation: n_readers must be at least 1")
    if cases.empty:
        raise MammolensError("reader simulation: no cases")
    if cases["case"].duplicated().any():
        raise MammolensError("reader simulation: duplicate case ids")
    truth = pd.to_numeric(cases["truth"], errors="coerce").to_numpy()
    if np.isnan(truth).any() or not np.isin(truth, (0, 1)).all():
        raise MammolensError("reader simulation: truth must be 0/1 for every case")
    truth = truth.astype(int)
    ai = pd.to_numeric(cases["ai_score"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(ai).all():
        raise MammolensError("reader simulation: ai_score must be finite for every case")

    rng = np.random.default_rng(seed)
    n = len(cases)
    # AI on the readers' latent scale: logit, standardised over cases
    a = _logit(ai)
    sd = a.std()
    a = (a - a.mean()) / (sd if sd > 0 else 1.0)
    # scale so the AI's class separation is comparable with the readers' (k * mean diff)
    if truth.min() != truth.max():
        sep = a[truth == 1].mean() - a[truth == 0].mean()
        k = float(np.mean(skill_range)) / sep if sep > 0 else 1.0
        k = float(np.clip(k, 0.5, 3.0))
    else:
        k = 1.0

    skills = np.linspace(skill_range[0], skill_range[1], n_readers) if n_readers > 1 else np.array([np.mean(skill_range)])
    # weaker readers rely more on the AI
    reliance = np.linspace(reliance_range[1], reliance_range[0], n_readers) if n_readers > 1 else np.array([np.mean(reliance_range)])
    order = rng.permutation(n_readers)
    skills, reliance = skills[order], reliance[order]

    case_effect = rng.normal(0.0, np.sqrt(var_case), n)
    hit = (
        pd.to_numeric(cases["heatmap_hit"], errors="coerce").to_numpy(dtype=float)
        if "heatmap_hit" in cases.columns
        else np.full(n, np.nan)
    )
    ai_right = np.where(truth == 1, ai >= 0.5, ai < 0.5)
    heat_ok = np.where(np.isnan(hit), ai_right, hit > 0)

    rows = []
    case_ids = cases["case"].astype(str).to_numpy()
    for r in range(n_readers):
        reader = f"R{r + 1:02d}"
        base = -skills[r] / 2.0  # centre so that a latent 0 is the midpoint between classes
        z = base + skills[r] * truth + case_effect + rng.normal(0.0, np.sqrt(var_reader), n)
        za = (1 - reliance[r]) * z + reliance[r] * k * a + rng.normal(0.0, np.sqrt(var_refresh), n)
        accept = rng.random(n) < np.where(heat_ok, p_hit, p_miss)
        for modality, lat in (("unaided", z), ("aided", za)):
            score = 100.0 / (1.0 + np.exp(-lat))
            frame = pd.DataFrame(
                {
                    "reader": reader,
                    "case": case_ids,
                    "modality": modality,
                    "truth": truth,
                    "score": np.round(score, 3),
                }
            )
            if rate_heatmaps:
                frame["heatmap_acceptable"] = accept.astype(int) if modality == "aided" else pd.NA
                frame["heatmap_acceptable"] = frame["heatmap_acceptable"].astype("Int64")
            rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def reader_table(reads: pd.DataFrame, *, readers: Sequence[str] | None = None) -> pd.DataFrame:
    """Wide view: one row per case, one column per reader x modality (for inspection)."""
    d = reads if readers is None else reads[reads["reader"].isin(readers)]
    return d.pivot_table(index=["case", "truth"], columns=["reader", "modality"], values="score").reset_index()
