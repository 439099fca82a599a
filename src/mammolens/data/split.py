"""Patient-level train/validation/test splits and k-fold assignment.

Every image of a patient lands in the same split (or fold): the unit of randomisation is
the woman, never the image, so no patient's images can leak between training and
evaluation. Splits are stratified by the patient's label (a patient is positive if any
of her images is malignant; patients without a known label form their own stratum) and
optionally by further patient-level columns such as ``site`` or ``manufacturer`` (a
patient's value is her most common one). The assignment is a deterministic function of
the manifest's patients, their strata and the seed.

Allocation: within each stratum the patients are shuffled with the seed and the split
sizes are the stratum's share rounded with a carried remainder across strata
(largest-remainder / systematic allocation), so both the per-stratum and the overall
proportions are within one patient of the targets.

:func:`check_no_leakage <mammolens.data.manifest.check_no_leakage>` is run on the
result; a violation raises :class:`mammolens.errors.LeakageError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mammolens.data.manifest import SPLITS, check_no_leakage, normalize_manifest
from mammolens.errors import ConfigError, ManifestError

UNKNOWN = "<unknown>"


def patient_table(
    df: pd.DataFrame, *, stratify: Sequence[str] = ("label",), extra_strata: Sequence[str] = ()
) -> pd.DataFrame:
    """One row per patient: ``patient_id``, ``images``, ``label`` and the stratum key.

    ``label`` is the maximum image label (NA if none known). Other stratification columns
    take the patient's most common non-empty value (``"<unknown>"`` if none).
    """
    cols = list(dict.fromkeys([*stratify, *extra_strata]))
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(f"cannot stratify by missing column(s) {', '.join(missing)} (manifest has: {', '.join(df.columns)})")
    if "patient_id" not in df.columns or (df["patient_id"].astype(str) == "").any():
        raise ManifestError("every row needs a patient_id to split by patient")
    g = df.groupby("patient_id", sort=True)
    pt = pd.DataFrame({"images": g.size()})
    lab = df["label"].astype("Float64") if "label" in df.columns else pd.Series(np.nan, index=df.index)
    pt["label"] = lab.groupby(df["patient_id"]).max().astype("Int64")
    keys: list[pd.Series] = []
    for c in cols:
        if c == "label":
            keys.append(pt["label"].map(lambda v: UNKNOWN if pd.isna(v) else str(int(v))))
        else:
            keys.append(_patient_mode(df, c).reindex(pt.index).fillna(UNKNOWN).astype(str))
            pt[c] = keys[-1]
    if keys:
        stratum = keys[0].astype(str)
        for k in keys[1:]:
            stratum = stratum + "|" + k.astype(str)
        pt["stratum"] = stratum
    else:
        pt["stratum"] = "all"
    return pt.reset_index()


def _patient_mode(df: pd.DataFrame, column: str) -> pd.Series:
    """Each patient's most common non-empty value of ``column`` (ties: smallest value)."""
    vals = df[column].astype(str)
    ok = df[column].notna() & (vals != "") & (vals.str.lower() != "nan")
    d = pd.DataFrame({"patient_id": df["patient_id"][ok].to_numpy(), "v": vals[ok].to_numpy()})
    if d.empty:
        return pd.Series(dtype=object)
    counts = d.groupby(["patient_id", "v"], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values(["patient_id", "n", "v"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("patient_id").set_index("patient_id")["v"]


def _shuffled_strata(pt: pd.DataFrame, seed: int) -> list[np.ndarray]:
    """Patients grouped by stratum (sorted key order), each group shuffled by the seed."""
    rng = np.random.default_rng(seed)
    out = []
    for _, grp in pt.sort_values("patient_id").groupby("stratum", sort=True):
        ids = grp["patient_id"].to_numpy(dtype=object)
        out.append(ids[rng.permutation(len(ids))])
    return out


def split_manifest(
    df: pd.DataFrame,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    stratify: Sequence[str] = ("label",),
    extra_strata: Sequence[str] = (),
) -> pd.DataFrame:
    """Assign ``split`` = train / val / test by patient, stratified.

    Parameters
    ----------
    df
        A manifest (one row per image).
    val, test
        Fractions of patients for validation and test (``0 <= val, test``,
        ``val + test < 1``).
    seed
        Random seed: the same manifest and seed give the same split.
    stratify
        Patient-level strata; ``"label"`` is the patient's label (positive if any image).
    extra_strata
        Further columns (e.g. ``("manufacturer",)``, ``("site",)``).

    Returns
    -------
    pandas.DataFrame
        A copy with the ``split`` column (re)assigned for every row.

    Raises
    ------
    ConfigError
        For invalid fractions or stratification columns.
    LeakageError
        If a patient ended up in two splits (never expected; checked anyway).
    """
    for name, v in (("val", val), ("test", test)):
        if not (isinstance(v, int | float) and 0 <= v < 1):
            raise ConfigError(f"--{name} must be a fraction in [0, 1), got {v!r}")
    if val + test >= 1:
        raise ConfigError(f"--val + --test must be below 1 (got {val} + {test}); nothing would be left to train on")
    if len(df) == 0:
        raise ManifestError("the manifest has no rows to split")
    pt = patient_table(df, stratify=stratify, extra_strata=extra_strata)
    fractions = {"test": float(test), "val": float(val)}
    assignment: dict[Any, str] = {}
    carry = {k: 0.0 for k in fractions}
    for ids in _shuffled_strata(pt, seed):
        n = len(ids)
        counts = {}
        for k, f in fractions.items():
            want = n * f + carry[k]
            c = int(np.floor(want + 0.5))
            counts[k] = c
            carry[k] = want - c
        # never allocate more than the stratum holds (train takes the rest)
        if counts["test"] + counts["val"] > n:
            over = counts["test"] + counts["val"] - n
            for k in ("val", "test"):
                take = min(over, counts[k])
                counts[k] -= take
                carry[k] += take
                over -= take
        i = 0
        for k in ("test", "val"):
            for pid in ids[i : i + counts[k]]:
                assignment[pid] = k
            i += counts[k]
        for pid in ids[i:]:
            assignment[pid] = "train"
    out = df.copy()
    out["split"] = out["patient_id"].map(assignment).astype(object)
    check_no_leakage(out)
    return out


def kfold_manifest(
    df: pd.DataFrame,
    *,
    k: int = 5,
    seed: int = 0,
    stratify: Sequence[str] = ("label",),
    extra_strata: Sequence[str] = (),
    test: float = 0.0,
) -> pd.DataFrame:
    """Add a ``fold`` column (0..k-1) assigning each patient to one of ``k`` folds.

    Stratified like :func:`split_manifest`: within each stratum the shuffled patients are
    dealt round-robin, the starting fold continuing from one stratum to the next, so the
    fold sizes differ by at most one patient and each fold has its share of positives.

    With ``test > 0`` a stratified share of patients is first held out (``split`` =
    ``test``, ``fold`` empty) and the folds cover the rest (``split`` = ``train``): the
    usual design of cross-validation for model selection plus an untouched test set.
    Without it, ``split`` is left as it is and ``fold`` is an ``int`` column.
    """
    if not isinstance(k, int) or k < 2:
        raise ConfigError(f"--folds must be an integer >= 2, got {k!r}")
    if len(df) == 0:
        raise ManifestError("the manifest has no rows to split")
    out = df.copy()
    pool = out
    if test:
        out = split_manifest(out, val=0.0, test=test, seed=seed, stratify=stratify, extra_strata=extra_strata)
        pool = out[out["split"] == "train"]
    pt = patient_table(pool, stratify=stratify, extra_strata=extra_strata)
    if len(pt) < k:
        raise ConfigError(f"{k} folds need at least {k} patients; {len(pt)} available")
    fold: dict[Any, int] = {}
    pos = 0
    for ids in _shuffled_strata(pt, seed):
        for pid in ids:
            fold[pid] = pos % k
            pos += 1
    out["fold"] = out["patient_id"].map(fold).astype("Int64" if test else int)
    check_no_leakage(out.assign(fold=out["fold"].astype(str).replace("<NA>", "")), column="fold")
    if test:
        check_no_leakage(out)
    return out


def split_summary(df: pd.DataFrame, *, column: str = "split") -> pd.DataFrame:
    """Per split (or fold): patients, images, positive images and positive patients."""
    d = normalize_manifest(df) if column == "split" else df.assign(label=normalize_manifest(df)["label"])
    if column == "split":
        groups = [s for s in SPLITS if s in set(d[column].astype(str))]
    else:
        groups = sorted(d[column].dropna().unique())
    rows = []
    for s in groups:
        part = d[d[column].astype(str) == str(s)]
        lab = part["label"]
        pos_pat = part.loc[lab.fillna(0) == 1, "patient_id"].nunique()
        rows.append(
            {
                column: s,
                "patients": int(part["patient_id"].nunique()),
                "images": int(len(part)),
                "positive_images": int((lab == 1).sum()),
                "positive_patients": int(pos_pat),
                "unknown_label_images": int(lab.isna().sum()),
            }
        )
    return pd.DataFrame(rows)


def single_class_splits(summary: pd.DataFrame, *, column: str = "split") -> list[str]:
    """Splits (or folds) whose known labels are all one class (or that have no labels)."""
    bad = []
    for _, r in summary.iterrows():
        known = r["images"] - r["unknown_label_images"]
        if r["positive_images"] == 0 or r["positive_images"] == known:
            bad.append(str(r[column]))
    return bad


__all__ = ["kfold_manifest", "patient_table", "single_class_splits", "split_manifest", "split_summary"]
