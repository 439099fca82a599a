"""Turn a dataset (DICOM folder or a public dataset's layout) into a manifest.

``ingest(format, source, out, **options)`` runs the format's adapter
(:mod:`mammolens.data.adapters`), checks the rows, writes the manifest (CSV or Parquet
by ``out``'s suffix, validated by :func:`mammolens.data.manifest.write_manifest`) and the
QC table ``<out stem>_qc.csv`` beside it, and returns an :class:`IngestResult`.

Bad inputs (corrupt files, missing files, malformed lines) become QC rejections and
never stop the good ones. Roll-ups of the image labels per breast and per exam:
:func:`breast_labels`, :func:`exam_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.data.adapters import get_adapter
from mammolens.data.adapters._common import STAGE, Track, header_cache, no_progress
from mammolens.data.lesions import parse_lesions, rebase_mask_paths, relative_path
from mammolens.data.manifest import (
    BREAST_KEY,
    DENSITIES,
    EXAM_KEY,
    LATERALITIES,
    OPTIONAL_COLUMNS,
    OUTCOMES,
    REQUIRED_COLUMNS,
    SPLITS,
    empty_manifest,
    normalize_manifest,
    write_manifest,
)
from mammolens.errors import ConfigError, InputError, ManifestError
from mammolens.qc import QCTable

_OUTCOME_RANK = {"normal": 0, "benign": 1, "malignant": 2}


@dataclass
class IngestResult:
    """What :func:`ingest` produced."""

    manifest: pd.DataFrame
    qc: QCTable
    manifest_path: Path
    qc_path: Path
    format: str = ""
    source: str = ""

    def summary(self) -> dict[str, Any]:
        """Counts for people and ``--json``: images, patients, exams, outcomes, QC."""
        return summarize(self.manifest, self.qc) | {
            "format": self.format,
            "source": self.source,
            "manifest": str(self.manifest_path),
            "qc_table": str(self.qc_path),
        }


def summarize(df: pd.DataFrame, qc: QCTable | None = None) -> dict[str, Any]:
    """Counts of a manifest (+ QC): the keys documented in docs/datasets.md."""
    label = df["label"] if "label" in df else pd.Series(dtype="Int64")
    outcome = df["outcome"] if "outcome" in df.columns else pd.Series([""] * len(df), index=df.index)
    out: dict[str, Any] = {
        "images": int(len(df)),
        "patients": int(df["patient_id"].nunique()) if len(df) else 0,
        "exams": int(df[EXAM_KEY].drop_duplicates().shape[0]) if len(df) else 0,
        "breasts": int(df[BREAST_KEY].drop_duplicates().shape[0]) if len(df) else 0,
        "label_1": int((label == 1).sum()),
        "label_0": int((label == 0).sum()),
        "label_unknown": int(label.isna().sum()),
        # images without an outcome count as malignant when their label is 1
        "malignant": int(((outcome == "malignant") | ((outcome.fillna("") == "") & (label == 1).fillna(False))).sum()),
        "benign": int((outcome == "benign").sum()),
        "normal": int((outcome == "normal").sum()),
        "with_lesions": int((df["lesions"].astype(str) != "").sum()) if len(df) else 0,
        "positive_breasts": int((breast_labels(df)["label"] == 1).sum()) if len(df) else 0,
        "positive_exams": int((exam_labels(df)["label"] == 1).sum()) if len(df) else 0,
    }
    if qc is not None:
        out["rejected"] = len(qc.rejected)
        out["flagged"] = len(qc.flagged)
        out["rejected_by_reason"] = dict(qc.reasons("reject").most_common())
        out["flagged_by_reason"] = dict(qc.reasons("flag").most_common())
    return out


def qc_path_for(manifest_path: str | Path) -> Path:
    """``<manifest stem>_qc.csv`` beside the manifest."""
    p = Path(manifest_path)
    return p.with_name(f"{p.stem}_qc.csv")


def ingest(
    format: str,
    source: str | Path,
    out: str | Path,
    *,
    track: Track = no_progress,
    relative_paths: bool = False,
    **options: Any,
) -> IngestResult:
    """Ingest ``source`` with the adapter ``format`` and write the manifest to ``out``.

    Parameters
    ----------
    format
        Adapter name (see :data:`mammolens.data.adapters.ADAPTERS`).
    source
        The dataset's folder (or, for ``csv``, the table file).
    out
        Manifest file to write (``.csv`` or ``.parquet``); the QC table goes to
        ``<stem>_qc.csv`` beside it.
    track
        ``track(iterable, total, description)`` for progress display.
    relative_paths
        Write image paths relative to the manifest's folder (portable copies);
        absolute by default.
    **options
        The adapter's own options (e.g. ``annotations=`` for ``dicom``, ``mapping=`` for
        ``csv``); an option the adapter does not take raises :class:`ConfigError`.

    Returns
    -------
    IngestResult
    """
    adapter = get_adapter(format)
    unknown = sorted(set(options) - set(adapter.options))
    if unknown:
        accepted = ", ".join(adapter.options) or "none"
        raise ConfigError(f"format {adapter.name!r} does not take option(s) {', '.join(unknown)} (it takes: {accepted})")
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"{out}: the manifest must end in .csv or .parquet")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(2, "not found", str(source))
    if adapter.name != "dicom" and (source.is_dir() != (adapter.name != "csv")):
        want = "a table file" if adapter.name == "csv" else "the dataset's folder"
        raise InputError(source, f"format {adapter.name!r} expects {want}")
    qc = QCTable()
    with header_cache(out.with_name(f"{out.stem}_headers.jsonl")):
        df = adapter.load(source, qc=qc, track=track, **options)
    df = finalize(df, qc, dataset=adapter.name)
    if relative_paths:
        base = out.resolve().parent
        df["path"] = [relative_path(p, base) for p in df["path"]]
        df["lesions"] = [rebase_mask_paths(s, relative_to=base) for s in df["lesions"]]
    write_manifest(df, out)
    qc_path = qc.write_csv(qc_path_for(out))
    return IngestResult(df, qc, out, qc_path, adapter.name, str(source))


def finalize(df: pd.DataFrame, qc: QCTable, *, dataset: str) -> pd.DataFrame:
    """Normalise adapter rows; reject duplicate image ids and rows the schema refuses."""
    if df is None or len(df) == 0:
        return empty_manifest()
    df = df.copy()
    if "dataset" not in df.columns:
        df["dataset"] = dataset
    df["dataset"] = df["dataset"].fillna(dataset).replace("", dataset)
    if "flags" in df.columns and (df["flags"].fillna("") == "").all():
        df = df.drop(columns="flags")
    # a row the schema cannot accept is rejected alone, not the whole manifest
    try:
        df = normalize_manifest(df)
    except ManifestError:
        keep = np.ones(len(df), dtype=bool)
        for i in range(len(df)):
            one = df.iloc[[i]]
            try:
                normalize_manifest(one)
            except ManifestError as e:
                r = one.iloc[0]
                qc.add(STAGE, r.get("path", ""), f"invalid row: {e}", image_id=str(r.get("image_id", "")))
                keep[i] = False
        df = normalize_manifest(df[keep].reset_index(drop=True))
    # extra text columns: one type per column (empty = unknown) so Parquet can store them
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    for c in df.columns:
        if c not in known and df[c].dtype == object:
            df[c] = df[c].map(_text)
    dup = df["image_id"].duplicated(keep="first")
    for _, r in df[dup].iterrows():
        qc.add(STAGE, r["path"], f"duplicate image_id: {r['image_id']} already ingested", image_id=r["image_id"])
    df = df[~dup]
    bad = pd.Series("", index=df.index, dtype=object)

    def mark(mask: pd.Series, why: str) -> None:
        bad.loc[mask & (bad == "")] = why

    mark((df["patient_id"] == "") | (df["image_id"] == "") | (df["path"] == ""), "missing identity: empty image_id, patient_id or path")
    for col, allowed in (("laterality", LATERALITIES), ("density", DENSITIES), ("split", set(SPLITS) | {""})):
        mark(~df[col].isin(allowed), f"invalid value: {col} not in {sorted(allowed - {''})}")
    if "outcome" in df.columns:
        df["outcome"] = df["outcome"].str.lower()
        mark(~df["outcome"].isin(OUTCOMES), "invalid value: outcome not malignant, benign or normal")
    mark((df["age"] < 0) | (df["age"] > 130), "invalid value: age outside 0-130")
    mark(pd.Series([not _valid_lesion_cell(v) for v in df["lesions"]], index=df.index), "invalid value: lesions is not a valid lesion JSON list")
    for i in df.index[bad != ""]:
        qc.add(STAGE, df.at[i, "path"], f"{bad[i]} (row {df.at[i, 'image_id']!r})", image_id=df.at[i, "image_id"])
    return df[bad == ""].reset_index(drop=True)


def _text(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _valid_lesion_cell(cell: str) -> bool:
    if not cell:
        return True
    try:
        parse_lesions(cell)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def _rollup(df: pd.DataFrame, level: str) -> pd.DataFrame:
    from mammolens.stats.levels import aggregate_scores

    d = df.copy()
    d["_label"] = d["label"].astype("Float64")
    if "outcome" in d.columns:
        d["_outcome"] = d["outcome"].map(lambda v: _OUTCOME_RANK.get(str(v), -1))
    else:
        d["_outcome"] = -1
    # the truth of a breast / exam is the max of its known labels (stats.levels' rule), and
    # its outcome the most severe
    res = aggregate_scores(d, level=level, score="_outcome", truth="_label", how="max", sort=True,
                           missing_keys="group")
    inv = {v: k for k, v in _OUTCOME_RANK.items()}
    out = res[[c for c in res.columns if c not in ("_outcome", "_label", "n_images")]].copy()
    out["images"] = res["n_images"]
    out["label"] = res["_label"].astype("Int64")
    out["outcome"] = res["_outcome"].map(lambda v: inv.get(int(v), ""))
    return out


def breast_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Labels per breast (``BREAST_KEY``): malignant if any image of the breast is.

    Returns one row per breast with ``images``, ``label`` (nullable Int64: empty when no
    image of the breast has a known label) and ``outcome`` (the most severe).
    """
    return _rollup(df, "breast")


def exam_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Labels per exam (``EXAM_KEY``): malignant if any image of the exam is."""
    return _rollup(df, "exam")


__all__ = ["IngestResult", "breast_labels", "exam_labels", "finalize", "ingest", "qc_path_for", "summarize"]
