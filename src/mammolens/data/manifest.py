"""The manifest: one row per image, the only thing later stages read.

Columns (``REQUIRED_COLUMNS`` must be present; empty string / NaN means unknown):

==================  =====================================================================
image_id            unique id of the image (string)
patient_id          the woman; splits never put one patient in two splits
study_id            the exam (StudyInstanceUID or the dataset's exam id)
path                image file (DICOM, PNG, PGM, TIFF); relative paths are resolved
                    against the manifest's folder when read
laterality          ``L`` or ``R`` (empty if unknown)
view                ``CC``, ``MLO``, ... upper case (others kept; see QC flags)
manufacturer        canonical vendor: ``Hologic``, ``GE``, ``Siemens``, ``Philips``,
                    ``Fujifilm``, ``Agfa``, ``Konica``, ``Planmed``, ``IMS``, ... or empty
age                 patient age in years (float, NaN if unknown)
density             common scale ``A``-``D`` (BI-RADS); dataset's own value in
                    ``density_original``
label               1 = biopsy-proven malignant, 0 = not malignant, empty = unknown
lesions             JSON list of annotations in original pixel coordinates
                    (see :mod:`mammolens.data.lesions`)
split               ``train``, ``val``, ``test`` or empty
==================  =====================================================================

Optional known columns: ``dataset``, ``site``, ``outcome`` (``malignant``, ``benign``,
``normal``), ``density_original``, ``manufacturer_model``, ``sop_instance_uid``,
``flags`` (``;``-separated QC flags such as ``for_processing;spot``), ``height``,
``width``. Unknown extra columns are kept untouched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from mammolens.errors import LeakageError, ManifestError

REQUIRED_COLUMNS: list[str] = [
    "image_id",
    "patient_id",
    "study_id",
    "path",
    "laterality",
    "view",
    "manufacturer",
    "age",
    "density",
    "label",
    "lesions",
    "split",
]
OPTIONAL_COLUMNS: list[str] = [
    "dataset",
    "site",
    "outcome",
    "density_original",
    "manufacturer_model",
    "sop_instance_uid",
    "flags",
    "height",
    "width",
]
STRING_COLUMNS = [
    c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c not in {"age", "label", "height", "width"}
]
LATERALITIES = {"L", "R", ""}
DENSITIES = {"A", "B", "C", "D", ""}
SPLITS = ("train", "val", "test")
OUTCOMES = {"malignant", "benign", "normal", ""}

#: keys of the roll-ups: a breast is one side of one exam, an exam is one study.
BREAST_KEY = ["patient_id", "study_id", "laterality"]
EXAM_KEY = ["patient_id", "study_id"]


def empty_manifest() -> pd.DataFrame:
    """An empty manifest with the required columns and dtypes."""
    return normalize_manifest(pd.DataFrame({c: [] for c in REQUIRED_COLUMNS}))


def normalize_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce dtypes (strings, float age, nullable Int64 label) without validating."""
    df = df.copy()
    for c in REQUIRED_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan if c in ("age", "label") else ""
    for c in STRING_COLUMNS:
        if c in df.columns:
            df[c] = df[c].map(_to_str).astype(object)
    df["laterality"] = df["laterality"].str.upper()
    df["view"] = df["view"].str.upper()
    df["density"] = df["density"].str.upper()
    df["split"] = df["split"].str.lower()
    df["age"] = pd.to_numeric(df["age"], errors="coerce").astype(float)
    df["label"] = _to_label(df["label"])
    for c in ("height", "width"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    return df


def _to_str(v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _to_label(s: pd.Series) -> pd.Series:
    def conv(v: object) -> object:
        t = _to_str(v).lower()
        if t in ("", "nan", "none", "na"):
            return pd.NA
        if t in ("1", "1.0", "true", "malignant", "m"):
            return 1
        if t in ("0", "0.0", "false", "benign", "normal", "b", "n"):
            return 0
        raise ManifestError(f"label must be 0, 1 or empty, got {v!r}")

    return s.map(conv).astype("Int64")


def validate_manifest(df: pd.DataFrame, *, source: str | Path | None = None) -> pd.DataFrame:
    """Normalise and validate a manifest; raise :class:`ManifestError` listing every problem.

    Returns the normalised frame (dtypes coerced). ``source`` names the file in messages.
    """
    where = f"{source}: " if source else ""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{where}manifest is missing required column(s): {', '.join(missing)}")
    try:
        df = normalize_manifest(df)
    except ManifestError as e:
        raise ManifestError(f"{where}{e}") from None
    problems: list[str] = []
    if (df["image_id"] == "").any():
        problems.append(f"{int((df['image_id'] == '').sum())} row(s) with empty image_id")
    dup = df["image_id"][df["image_id"].duplicated() & (df["image_id"] != "")]
    if len(dup):
        problems.append(f"duplicate image_id(s): {_some(dup.unique())}")
    if (df["patient_id"] == "").any():
        problems.append(f"{int((df['patient_id'] == '').sum())} row(s) with empty patient_id")
    if (df["path"] == "").any():
        problems.append(f"{int((df['path'] == '').sum())} row(s) with empty path")
    for col, allowed in (
        ("laterality", LATERALITIES),
        ("density", DENSITIES),
        ("split", set(SPLITS) | {""}),
    ):
        bad = df[col][~df[col].isin(allowed)]
        if len(bad):
            problems.append(f"{col} has invalid value(s) {_some(bad.unique())}; allowed: {sorted(allowed - {''})} or empty")
    if "outcome" in df.columns:
        bad = df["outcome"][~df["outcome"].str.lower().isin(OUTCOMES)]
        if len(bad):
            problems.append(f"outcome has invalid value(s) {_some(bad.unique())}")
    ages = df["age"].dropna()
    if ((ages < 0) | (ages > 130)).any():
        problems.append("age outside 0-130")
    bad_lesions = [iid for iid, s in zip(df["image_id"], df["lesions"], strict=True) if not _valid_lesions(s)]
    if bad_lesions:
        problems.append(f"lesions is not a JSON list for image(s) {_some(bad_lesions)}")
    if problems:
        raise ManifestError(f"{where}invalid manifest: " + "; ".join(problems))
    return df


def _valid_lesions(s: str) -> bool:
    if s == "":
        return True
    try:
        return isinstance(json.loads(s), list)
    except (json.JSONDecodeError, TypeError):
        return False


def _some(values: Iterable[object], n: int = 5) -> str:
    vals = list(values)
    head = ", ".join(repr(v) for v in vals[:n])
    return head + (f" (+{len(vals) - n} more)" if len(vals) > n else "")


def read_manifest(path: str | Path, *, resolve_paths: bool = True) -> pd.DataFrame:
    """Read and validate a manifest (``.csv`` or ``.parquet``).

    Relative image paths are made absolute against the manifest's folder.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad manifest file
        raise ManifestError(f"{path}: cannot read manifest ({type(e).__name__}: {e})") from None
    df = validate_manifest(df, source=path)
    if resolve_paths:
        base = path.resolve().parent
        df["path"] = [p if (p == "" or Path(p).is_absolute() or "://" in p) else str(base / p) for p in df["path"]]
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write a manifest (format by suffix: ``.parquet`` or ``.csv``)."""
    path = Path(path)
    df = validate_manifest(df, source=path)
    cols = REQUIRED_COLUMNS + [c for c in df.columns if c not in REQUIRED_COLUMNS]
    df = df[cols]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        out = df.copy()
        out["label"] = out["label"].astype("Int64")
        out.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def manifest_hash(df: pd.DataFrame) -> str:
    """A stable SHA-256 of the manifest's content (row order independent)."""
    d = normalize_manifest(df)
    cols = sorted(d.columns)
    d = d[cols].sort_values("image_id")
    d = pd.DataFrame({c: [_to_str(v) for v in d[c]] for c in cols})
    h = hashlib.sha256()
    h.update("\x1f".join(cols).encode())
    for row in d.itertuples(index=False):
        h.update("\x1f".join(row).encode())
        h.update(b"\n")
    return h.hexdigest()


def check_no_leakage(df: pd.DataFrame, *, column: str = "split") -> None:
    """Raise :class:`LeakageError` if any patient has images in more than one split.

    Rows with an empty split are ignored. Called by ``split`` and again before training
    and evaluation.
    """
    d = df[df[column].astype(str) != ""]
    n = d.groupby("patient_id")[column].nunique()
    leaked = n[n > 1]
    if len(leaked):
        ex = []
        for pid in list(leaked.index)[:5]:
            ex.append(f"{pid} in {sorted(d.loc[d['patient_id'] == pid, column].unique())}")
        raise LeakageError(
            f"{len(leaked)} patient(s) appear in more than one split (data leakage): " + "; ".join(ex)
        )


def _has_benign_lesion(cell: object) -> bool:
    if not isinstance(cell, str) or not cell.strip():
        return False
    try:
        items = json.loads(cell)
    except (json.JSONDecodeError, TypeError):
        return False
    return isinstance(items, list) and any(
        isinstance(d, dict) and str(d.get("pathology", "")).lower() == "benign" for d in items
    )


def benign_labels(df: pd.DataFrame) -> pd.Series:
    """Per image: does it show a benign finding? (the target of ``model.benign_output``).

    ``1`` when ``outcome`` is ``benign`` or a lesion's ``pathology`` is ``benign`` (an image
    can hold a benign and a malignant finding: the two targets are independent, as in
    the NYU / GMIC models); ``0`` when ``outcome`` is ``normal`` or ``malignant`` and no
    lesion is benign (the exam's work-up found no benign finding there); ``<NA>`` when
    nothing says (no ``outcome`` and no benign lesion): such images do not train the
    benign output.

    Returns
    -------
    pandas.Series
        ``Int64``, indexed like ``df``.
    """
    out = pd.Series(pd.NA, index=df.index, dtype="Int64")
    if "outcome" in df.columns:
        o = df["outcome"].fillna("").astype(str).str.strip().str.lower()
        out[o.isin(["normal", "malignant"]).to_numpy()] = 0
        out[(o == "benign").to_numpy()] = 1
    if "lesions" in df.columns:
        les = df["lesions"].map(_has_benign_lesion).to_numpy(dtype=bool)
        out[les] = 1
    return out


def subset_split(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of one split; raises ManifestError if there are none."""
    d = df[df["split"] == split]
    if d.empty:
        have = sorted(s for s in df["split"].unique() if s)
        raise ManifestError(f"split {split!r} is empty (splits present: {have or 'none'}); run `mammolens split` first")
    return d
