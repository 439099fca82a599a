"""Evaluation inputs: predictions, manifest, QC tables and reads, joined and rolled up to
image / breast / exam tables (roll-ups by :mod:`mammolens.stats.levels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.evaluate._common import LEVELS, PREDICTION_REQUIRED, EvaluationError, _age_bands
from mammolens.qc import QCTable


def _read_table(path_or_df: str | Path | pd.DataFrame, *, what: str) -> tuple[pd.DataFrame, str]:
    if isinstance(path_or_df, pd.DataFrame):
        return path_or_df.copy(), f"<{what} DataFrame>"
    p = Path(path_or_df)
    if not p.exists():
        raise EvaluationError(f"{p}: {what} file not found")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, dtype={"image_id": str, "patient_id": str, "study_id": str, "case": str, "reader": str})
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        raise EvaluationError(f"{p}: cannot read {what} ({type(e).__name__}: {e})") from None
    return df, str(p)


def load_predictions(
    path_or_df: str | Path | pd.DataFrame, *, what: str = "predictions", score: str = "score"
) -> tuple[pd.DataFrame, str]:
    """Read and validate an image-level predictions table (CSV/Parquet or a DataFrame).

    Required columns: ``image_id`` and the score column (finite numbers; ``score`` unless
    ``score`` names another column, e.g. ``malignant`` or ``prob`` of an external model's
    CSV). Optional: ``breast_score``, ``exam_score``, ``heatmap``, ``overlay``, ``model``,
    ``split``. The chosen column is returned as ``score``; with a column other than
    ``score`` the table's own ``breast_score`` / ``exam_score`` roll-ups (of some other
    score) are dropped, and breast/exam scores are the maximum over images.
    """
    df, src = _read_table(path_or_df, what=what)
    if score != "score":
        if score not in df.columns:
            raise EvaluationError(f"{src}: {what} have no score column {score!r} (have {list(df.columns)})")
        df = df.drop(columns=[c for c in ("score", "breast_score", "exam_score") if c in df.columns])
        df = df.rename(columns={score: "score"})
    missing = [c for c in PREDICTION_REQUIRED if c not in df.columns]
    if missing:
        hint = ""
        if "score" in missing:
            cands = [c for c in df.columns if c.lower() in ("malignant", "prob", "probability", "p_malignant", "malignancy", "pred", "prediction")]
            hint = f"; name the score column with --score COL{f' (e.g. --score {cands[0]})' if cands else ''}"
        raise EvaluationError(f"{src}: {what} lack required column(s) {missing} (have {list(df.columns)}){hint}")
    df["image_id"] = df["image_id"].astype(str).str.strip()
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].unique()[:5].tolist()
        raise EvaluationError(f"{src}: duplicate image_id(s) in {what}: {dup}")
    for c in ("score", "breast_score", "exam_score"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    bad = ~np.isfinite(df["score"].to_numpy(dtype=float))
    col = f"score column {score!r}" if score != "score" else "score"
    if bad.all():
        raise EvaluationError(f"{src}: no finite {col} in {what}")
    if bad.any():
        raise EvaluationError(f"{src}: {int(bad.sum())} {what} row(s) with a missing or non-numeric {col}")
    return df, src


def _model_name(preds: pd.DataFrame, default: str) -> str:
    if "model" in preds.columns:
        vals = [v for v in preds["model"].dropna().astype(str).unique() if v]
        if len(vals) == 1:
            return vals[0]
    return default


def join_predictions(preds: pd.DataFrame, manifest: pd.DataFrame, *, source: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Join predictions with the manifest on ``image_id``; stop if none match."""
    ids = set(manifest["image_id"])
    matched = preds["image_id"].isin(ids)
    info = {
        "n_predictions": int(len(preds)),
        "n_matched": int(matched.sum()),
        "n_unmatched_predictions": int((~matched).sum()),
    }
    if info["n_matched"] == 0:
        ex = preds["image_id"].head(3).tolist()
        raise EvaluationError(
            f"{source}: none of the {len(preds)} prediction image_id(s) is in the manifest "
            f"(e.g. {ex}); is this the right manifest?"
        )
    keep = [c for c in preds.columns if c not in manifest.columns or c == "image_id"]
    extra = [c for c in ("score", "breast_score", "exam_score") if c in preds.columns and c not in keep]
    df = manifest.merge(preds[keep + extra], on="image_id", how="inner", suffixes=("", "_pred"))
    return df, info


def level_table(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """One row per image / breast / exam: key, truth ``label``, ``score`` and covariates.

    Uses the predictions' own ``breast_score`` / ``exam_score`` roll-ups when present,
    otherwise :func:`mammolens.stats.levels.aggregate_scores` (max over images).
    """
    from mammolens.stats.levels import aggregate_scores, level_keys

    keep = ["split", "manufacturer", "density", "age", "age_band", "dataset"]
    keep = [c for c in keep if c in df.columns]
    base = df.copy()
    base["label"] = base["label"].astype(float)
    if level == "image":
        out = base.copy()
        out["key"] = out["image_id"]
        return out
    col = f"{level}_score"
    keys = level_keys(level)
    # the predictions' own roll-up (constant within a breast / exam) when complete, sorted by key
    own = col in base.columns and base[col].notna().all()
    out = aggregate_scores(base, level=level, score=col if own else "score", truth="label", how="max",
                           keep=keep, sort=own, missing_keys="group" if own else "raise")
    out = out.rename(columns={col: "score"})
    if own:
        out["label"] = out["label"].astype(float)
        out = out[[*keys, "score", "label", "n_images", *keep]]
    out = out.reset_index(drop=True)
    out["key"] = out[keys].astype(str).agg("|".join, axis=1)
    return out


def _labelled(tab: pd.DataFrame) -> pd.DataFrame:
    t = tab[tab["label"].notna()].copy()
    t["label"] = t["label"].astype(int)
    return t


def _check_two_classes(tab: pd.DataFrame, *, split: str, level: str, source: str) -> None:
    n_pos = int((tab["label"] == 1).sum())
    n_neg = int((tab["label"] == 0).sum())
    if n_pos == 0 or n_neg == 0:
        which = "malignant" if n_pos == 0 else "non-malignant"
        raise EvaluationError(
            f"{source}: split {split!r} has no {which} {level}s ({n_pos} malignant, {n_neg} not): "
            "AUC, sensitivity and specificity are undefined"
        )


# ----------------------------------------------------------------------------- QC + cohort
def discover_qc_files(manifest_path: Path | None) -> list[Path]:
    """QC tables beside the manifest (``qc.csv``, ``*qc*.csv``) and in a sibling ``cache/``."""
    if manifest_path is None:
        return []
    d = manifest_path.resolve().parent
    found: list[Path] = []
    for pat in ("qc.csv", "*qc*.csv", "*/qc.csv"):
        for p in sorted(d.glob(pat)):
            if p.is_file() and p not in found and p.resolve() != manifest_path.resolve():
                found.append(p)
    return found


def _read_qc(paths: Sequence[Path]) -> tuple[QCTable, list[str]]:
    qc = QCTable()
    used = []
    for p in paths:
        try:
            qc.extend(QCTable.read_csv(p))
            used.append(str(p))
        except (OSError, KeyError, UnicodeDecodeError) as e:
            raise EvaluationError(f"{p}: cannot read QC table ({type(e).__name__}: {e})") from None
    return qc, used


def load_reads(path_or_df: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Read a reader-study table: long format ``reader, case, modality, truth, score``.

    ``modality`` must take the values ``unaided`` and ``aided`` (case-insensitive); an
    optional ``heatmap_acceptable`` column (0/1, empty when not rated) carries ratings.
    """
    df, src = _read_table(path_or_df, what="reads")
    missing = [c for c in ("reader", "case", "modality", "truth", "score") if c not in df.columns]
    if missing:
        raise EvaluationError(f"{src}: reads lack required column(s) {missing} (have {list(df.columns)})")
    df["reader"] = df["reader"].astype(str)
    df["case"] = df["case"].astype(str)
    df["modality"] = df["modality"].astype(str).str.strip().str.lower()
    bad = sorted(set(df["modality"]) - {"unaided", "aided"})
    if bad:
        raise EvaluationError(f"{src}: modality must be 'unaided' or 'aided', found {bad}")
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    df["truth"] = pd.to_numeric(df["truth"], errors="coerce")
    if df["score"].isna().any() or df["truth"].isna().any():
        raise EvaluationError(f"{src}: {int(df['score'].isna().sum() + df['truth'].isna().sum())} read(s) with a missing score or truth")
    return df, src


def _match_cases(reads: pd.DataFrame, tabs: dict[str, pd.DataFrame], src: str) -> tuple[str, pd.DataFrame]:
    """Which level the reads' cases are (image_id, breast key or study_id); AI score per case."""
    cases = set(reads["case"])
    cands = {
        "image": tabs["image"].assign(case=tabs["image"]["image_id"].astype(str)),
        "exam": tabs["exam"].assign(case=tabs["exam"]["study_id"].astype(str)),
        "breast": tabs["breast"].assign(case=tabs["breast"]["study_id"].astype(str) + ":" + tabs["breast"]["laterality"].astype(str)),
    }
    best, best_n = None, 0
    for level, t in cands.items():
        n = len(cases & set(t["case"]))
        if n > best_n:
            best, best_n = level, n
    if best is None:
        raise EvaluationError(f"{src}: none of the {len(cases)} read case id(s) matches an image_id, study_id or study_id:laterality of the evaluated split")
    if best_n < len(cases):
        raise EvaluationError(f"{src}: {len(cases) - best_n} of {len(cases)} read case(s) are not in the evaluated split at {best} level")
    t = cands[best]
    return best, t[t["case"].isin(cases)][["case", "label", "score"]].rename(columns={"score": "ai_score"})


# ----------------------------------------------------------------------------- main
def _resolve_paths(df: pd.DataFrame, base: Path | None) -> pd.DataFrame:
    for c in ("heatmap", "overlay"):
        if c in df.columns:
            df[c] = [
                "" if (not isinstance(p, str) or not p) else (p if Path(p).is_absolute() or base is None else str(base / p))
                for p in df[c].astype(object).where(df[c].notna(), "").astype(str)
            ]
    return df


def _level_tabs(d: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {lv: _labelled(level_table(d, lv)) for lv in LEVELS}


def _completeness(man: pd.DataFrame, ev: pd.DataFrame, *, split: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Which manifest images of ``split`` have no prediction (counts and the list)."""
    in_split = man[man["split"] == split]
    missing = in_split[~in_split["image_id"].isin(set(ev["image_id"]))]
    cols = [c for c in ("image_id", "patient_id", "study_id", "laterality", "view", "label", "path") if c in missing.columns]
    lab = pd.to_numeric(missing["label"], errors="coerce") if "label" in missing.columns else pd.Series(dtype=float)
    info = {
        "n_expected": int(len(in_split)),
        "n_predicted": int(len(in_split) - len(missing)),
        "n_missing": int(len(missing)),
        "n_missing_malignant": int((lab == 1).sum()),
        "complete": bool(missing.empty),
    }
    return info, missing[cols].reset_index(drop=True)


def _split_rows(joined: pd.DataFrame, split: str, src: str) -> pd.DataFrame:
    d = joined[joined["split"] == split]
    if d.empty:
        have = sorted({s for s in joined["split"].unique() if s})
        raise EvaluationError(f"{src}: no predicted image is in split {split!r} (predicted splits: {have or 'none'})")
    return d


@dataclass
class EvaluationInputs:
    """What :func:`load_inputs` read and checked: the tables every section starts from."""

    manifest: pd.DataFrame
    manifest_path: Path | None
    base_dir: Path | None
    source: str  # the predictions' name in messages
    joined: pd.DataFrame  # every prediction joined with its manifest row
    info: dict[str, int]
    model_name: str
    qc_table: QCTable
    qc_used: list[str]
    ev: pd.DataFrame  # the evaluated split's labelled images
    tabs: dict[str, pd.DataFrame]  # labelled image / breast / exam tables of the split
    val_tabs: dict[str, pd.DataFrame] | None  # the same for the validation split
    n_in_split: int
    n_without_prediction: int
    n_without_label: int
    completeness: dict[str, Any]
    missing: pd.DataFrame  # manifest images of the split without a prediction
    warnings: list[str] = field(default_factory=list)


def load_inputs(
    predictions: str | Path | pd.DataFrame,
    manifest: str | Path | pd.DataFrame,
    *,
    qc: Sequence[str | Path] | None,
    split: str,
    val_split: str,
    level: str,
    score: str,
    require_complete: bool,
) -> EvaluationInputs:
    """Read the manifest, predictions and QC tables; join, roll up and check them.

    Raises :class:`EvaluationError` on inputs that cannot be evaluated (no labelled image
    in the split, one class at the primary level, incomplete predictions with
    ``require_complete``); softer problems become ``warnings``.
    """
    from mammolens.data.manifest import check_no_leakage, read_manifest, validate_manifest

    warnings: list[str] = []
    man_path = None if isinstance(manifest, pd.DataFrame) else Path(manifest)
    man = validate_manifest(manifest, source="manifest") if man_path is None else read_manifest(man_path)
    check_no_leakage(man)
    base_dir = man_path.resolve().parent if man_path is not None else None
    preds, psrc = load_predictions(predictions, score=score)
    pred_dir = None if isinstance(predictions, pd.DataFrame) else Path(predictions).resolve().parent
    preds = _resolve_paths(preds, pred_dir)
    joined, info = join_predictions(preds, man, source=psrc)
    if info["n_unmatched_predictions"]:
        warnings.append(f"{info['n_unmatched_predictions']} prediction(s) have an image_id that is not in the manifest and were ignored")
    joined["age_band"] = _age_bands(joined["age"])
    model_name = _model_name(preds, "model")

    qc_paths = [Path(p) for p in qc] if qc else discover_qc_files(man_path)
    for p in qc_paths:
        if not p.exists():
            raise EvaluationError(f"{p}: QC file not found")
    qc_table, qc_used = _read_qc(qc_paths)

    ev = _split_rows(joined, split, psrc)
    n_in_split = int((man["split"] == split).sum())
    n_without_pred = n_in_split - len(ev)
    completeness, missing_tab = _completeness(man, ev, split=split)
    if n_without_pred:
        ex = missing_tab["image_id"].head(3).tolist()
        what = (f"{n_without_pred} of {n_in_split} image(s) of split {split!r} in the manifest have no prediction "
                f"({completeness['n_missing_malignant']} of them malignant; e.g. {ex})")
        if require_complete:
            raise EvaluationError(f"{psrc}: {what}; --require-complete refuses incomplete predictions")
        warnings.append(f"{what}: they are not analysed, and the results describe only the {len(ev)} predicted "
                        "image(s); the list is in tables/missing_predictions.csv")
    n_without_label = int(ev["label"].isna().sum())
    ev = ev[ev["label"].notna()]
    if ev.empty:
        raise EvaluationError(f"{psrc}: no image of split {split!r} has a ground-truth label")
    tabs = _level_tabs(ev)
    _check_two_classes(tabs[level], split=split, level=level, source=psrc)
    for lv in list(tabs):
        if tabs[lv]["label"].nunique() < 2:
            warnings.append(f"{lv} level skipped: split {split!r} has one class at that level")
            del tabs[lv]
    val = joined[(joined["split"] == val_split) & joined["label"].notna()]
    val_tabs = _level_tabs(val) if len(val) else None
    if val_tabs is None:
        warnings.append(f"no predictions for the {val_split!r} split: operating points were chosen on the evaluated split (optimistic)")
    return EvaluationInputs(
        manifest=man, manifest_path=man_path, base_dir=base_dir, source=psrc, joined=joined, info=info,
        model_name=model_name, qc_table=qc_table, qc_used=qc_used, ev=ev, tabs=tabs, val_tabs=val_tabs,
        n_in_split=n_in_split, n_without_prediction=n_without_pred, n_without_label=n_without_label,
        completeness=completeness, missing=missing_tab, warnings=warnings,
    )
