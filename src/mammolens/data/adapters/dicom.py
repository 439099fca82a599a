"""Any folder tree of DICOM mammograms, with labels from an optional annotations CSV.

Expected layout: ``SOURCE/`` holding DICOM files at any depth, with any names (``.dcm``,
``.dicom`` or no extension). Hidden files and ``DICOMDIR`` are skipped; every other file
must be a mammogram.

Metadata come from the DICOM header (:func:`mammolens.io.dicom.read_dicom_metadata`):
``image_id`` = SOP Instance UID, ``patient_id`` = Patient ID, ``study_id`` = Study
Instance UID, laterality, view, canonical manufacturer, model, age, rows/columns.

Annotations (``annotations=PATH``, CLI ``--annotations``): a CSV (or ``.xlsx``/``.xls``
sheet) with one row per image, or one row per breast. An image row has a key column,
tried in this order:

* ``sop_instance_uid`` -- the SOP Instance UID of the file;
* ``path`` -- the file's path relative to ``SOURCE`` (``/`` separators);
* ``image_id`` -- the manifest image id (the SOP Instance UID here).

A breast row (when no image key matches) is keyed by patient and laterality, and by
exam when it has a ``study_id``: ``patient_id`` (also spelled ``ID1`` as in CMMD's
sheet, or ``PatientID``) against the header's Patient ID, ``laterality`` (also
``LeftRight``, ``side``; ``L``/``R``/``LEFT``/``RIGHT``, or ``B``/``both`` for both
breasts) against the image's laterality, and an optional ``study_id`` (Study Instance
UID) restricting it to one exam. Its values go to every image of that breast; an image
row for the same image wins over a breast row. Two rows for the same breast: the second
is ignored with a QC flag. So a per-breast label sheet such as CMMD's
(``ID1, LeftRight, Age, number, abnormality, classification, subtype``) works as it is.

Recognised columns: ``label`` (0/1, ``malignant``/``benign``; empty = unknown),
``outcome`` (malignant/benign/normal), ``classification`` (``Malignant``/``Benign``/
``Normal``: gives ``label`` and ``outcome`` when there is no ``label`` column),
``density`` (A-D or 1-4), ``lesions`` (JSON list, see :mod:`mammolens.data.lesions`; a
relative ``mask`` path is resolved against the CSV's folder); a column whose name is a
manifest column in another case (``Age``) is that column; any other non-empty value
overrides the header's (e.g. ``age``, ``site``) or is added as a column. ``mammolens
synth`` writes such a file (``OUT/annotations.csv``).

QC
--
Rejected: files that are not DICOM, corrupt headers, modality other than MG,
tomosynthesis or multi-frame objects, implausible sizes or colour images, and what the
header already disproves about the pixels: no Pixel Data, a pixel data length that
contradicts Rows x Columns x Bits Allocated (uncompressed syntaxes), absurd declared
sizes (see :func:`mammolens.io.dicom.validate_mammogram` and
:func:`~mammolens.io.dicom.check_pixel_header`), duplicate SOP Instance UIDs, and
annotation rows that are malformed (wrong field count, invalid label or lesions JSON).
Flagged (kept, ``flags`` column): FOR PROCESSING images, spot compression,
magnification, implants, non-standard or unknown views, unknown laterality; annotation
rows that match no image; mask files that do not exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.data.adapters._common import (
    STAGE,
    Track,
    add_flag,
    apply_header,
    density_from_letter,
    density_from_number,
    flag_rows,
    laterality_code,
    metadata_reader,
    new_row,
    no_progress,
    read_table_rows,
)
from mammolens.data.lesions import parse_lesions, rebase_mask_paths
from mammolens.data.manifest import OUTCOMES
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "dicom"
SUMMARY = "a folder tree of DICOM mammograms (+ --annotations CSV/xlsx joined on SOP UID, path, image_id, or patient + laterality [+ study])"

_SKIP_NAMES = {"dicomdir", "thumbs.db", "desktop.ini"}
_PROTECTED = {"image_id", "path", "sop_instance_uid"}


def list_files(source: Path, *, exclude: set[Path] = frozenset()) -> list[Path]:  # type: ignore[assignment]
    """Candidate DICOM files under ``source`` (sorted; hidden files and DICOMDIR skipped)."""
    out = []
    for p in sorted(source.rglob("*")):
        rel = p.relative_to(source)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.name.lower() in _SKIP_NAMES or p.resolve() in exclude:
            continue
        out.append(p)
    return out


def _read_one(reader: Callable[[Path], dict[str, Any]], path: Path) -> tuple[Path, dict[str, Any] | None, str | None]:
    try:
        return path, reader(path), None
    except InputError as e:
        return path, None, _reason(e.reason)
    except Exception as e:  # noqa: BLE001 - never let one file stop the others
        return path, None, f"unreadable DICOM: {type(e).__name__}: {e}"


def read_headers(files: list[Path], *, workers: int = 1) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """``(path, metadata or None, QC reason or None)`` for each file, in order.

    ``workers > 1`` reads headers in threads (header reading is I/O bound: it helps
    most on network storage); the order of the results does not depend on it.
    """
    reader = metadata_reader()
    if workers <= 1 or len(files) < 2:
        for p in files:
            yield _read_one(reader, p)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda p: _read_one(reader, p), files)


def load(
    source: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    annotations: str | Path | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Read every DICOM file under ``source``; join ``annotations`` (see module docstring).

    ``workers`` threads read the headers (CLI ``--workers``).
    """
    source = Path(source)
    if source.is_file():
        files, root = [source], source.parent
    elif source.is_dir():
        root = source
        exclude = {Path(annotations).resolve()} if annotations else set()
        files = list_files(source, exclude=exclude)
    else:
        raise InputError(source, "not found")
    rows = rows_from_files(files, root, qc=qc, track=track, workers=workers)
    if annotations:
        _join_annotations(rows, Path(annotations), qc)
    flag_rows(rows, qc)
    df = pd.DataFrame(rows)
    return df.drop(columns=["_rel"]) if "_rel" in df.columns else df


def rows_from_files(
    files: list[Path],
    root: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    workers: int = 1,
    dataset: str = "dicom",
) -> list[dict[str, Any]]:
    """Manifest rows from DICOM ``files`` (headers only), with QC rejections.

    Each row keeps its path relative to ``root`` in ``_rel`` (the annotations join on
    it; drop it before building the manifest). Used by this adapter and by those of
    datasets that are a DICOM tree plus a label sheet (CMMD).
    """
    from mammolens.io.dicom import validate_mammogram

    rows: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path, meta, err in track(read_headers(files, workers=workers), len(files), "reading DICOM headers"):
        if meta is not None:
            try:
                validate_mammogram(meta, path)  # incl. what the header disproves about the pixels
            except InputError as e:
                err = _reason(e.reason)
        if err is not None or meta is None:
            qc.add(STAGE, path, err or "unreadable DICOM")
            continue
        uid = meta.get("sop_instance_uid") or ""
        rel = path.relative_to(root).as_posix()
        image_id = uid or rel
        if image_id in seen:
            qc.add(STAGE, path, f"duplicate SOP Instance UID: {uid} already read from {seen[image_id]}", image_id=image_id)
            continue
        seen[image_id] = path
        row = new_row(
            image_id=image_id,
            patient_id=meta.get("patient_id") or "",
            study_id=meta.get("study_id") or "",
            path=str(path.resolve()),
            laterality=meta.get("laterality") or "",
            view=meta.get("view") or "",
            age=meta.get("age", float("nan")),
            dataset=dataset,
            _rel=rel,
        )
        apply_header(row, meta)
        if not row["patient_id"]:
            qc.add(STAGE, path, "missing Patient ID: the image cannot be assigned to a patient", image_id=image_id)
            continue
        rows.append(row)
    return rows


def _reason(reason: str) -> str:
    """Give header-level reasons a groupable prefix."""
    low = reason.lower()
    if low.startswith("not a mammogram"):
        return reason
    if "not a dicom" in low or "not a readable dicom" in low:
        return f"not DICOM: {reason}"
    return f"rejected DICOM: {reason}"


#: other spellings of the per-breast key columns (first match wins), e.g. CMMD's sheet
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "patient_id": ("patient_id", "id1", "patientid", "patient"),
    "laterality": ("laterality", "leftright", "imagelaterality", "side"),
    "study_id": ("study_id", "studyinstanceuid"),
}
_BOTH = {"B", "BOTH", "BILATERAL"}


def canonical_columns(header: list[str]) -> dict[str, str]:
    """Map an annotation sheet's column names to manifest names.

    The per-breast keys' aliases (:data:`KEY_ALIASES`) and manifest columns written in
    another case (``Age`` -> ``age``) are renamed; other names are kept as they are.
    """
    from mammolens.data.manifest import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

    rename: dict[str, str] = {}
    lower = {h.lower(): h for h in header}
    for canon, aliases in KEY_ALIASES.items():
        if canon in header:
            continue
        for al in aliases:
            if al in lower and lower[al] not in rename:
                rename[lower[al]] = canon
                break
    for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, "classification"):
        if name not in header and name.lower() in lower and lower[name.lower()] not in rename:
            rename[lower[name.lower()]] = name
    return rename


def _join_annotations(rows: list[dict[str, Any]], ann_path: Path, qc: QCTable) -> None:
    """Join an annotations CSV / sheet onto ``rows`` in place (see the module docstring)."""
    header, records = read_table_rows(ann_path, qc)
    rename = canonical_columns(header)
    header = [rename.get(h, h) for h in header]
    records = [(n, {rename.get(k, k): v for k, v in rec.items()}) for n, rec in records]
    join_records(rows, header, records, ann_path, qc)


def join_records(
    rows: list[dict[str, Any]],
    header: list[str],
    records: list[tuple[int, dict[str, str]]],
    ann_path: Path,
    qc: QCTable,
) -> None:
    """Join annotation ``records`` (``(line, values)``) onto manifest ``rows`` in place.

    Image-keyed records (``sop_instance_uid``, ``path``, ``image_id``) go to one image;
    breast-keyed ones (``patient_id`` + ``laterality`` [+ ``study_id``]) to every image
    of the breast. Breast records are applied first so an image record for the same
    image wins. Adapters with their own label sheet (CMMD) build the records and call
    this, so every join follows the same rules and QC.
    """
    image_keys = [k for k in ("sop_instance_uid", "path", "image_id") if k in header]
    breast_ok = "patient_id" in header and "laterality" in header
    if not image_keys and not breast_ok:
        raise InputError(ann_path, "annotations need a key column: sop_instance_uid, path or image_id "
                                   "(one row per image), or patient_id and laterality (one row per breast)")
    by = {
        "sop_instance_uid": {r.get("sop_instance_uid", ""): r for r in rows if r.get("sop_instance_uid")},
        "path": {r["_rel"]: r for r in rows if r.get("_rel")},
        "image_id": {r["image_id"]: r for r in rows},
    }
    by_breast: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_breast.setdefault((str(r.get("patient_id", "")), str(r.get("laterality", ""))), []).append(r)
    base = ann_path.resolve().parent
    image_recs: list[tuple[str, dict[str, Any], dict[str, str]]] = []
    breast_recs: list[tuple[str, list[dict[str, Any]], dict[str, str]]] = []
    seen_breasts: dict[tuple[str, str, str], int] = {}
    for line_no, rec in records:
        where = f"line {line_no}"
        target = None
        for k in image_keys:
            v = rec.get(k, "")
            if k == "path":
                v = v.replace("\\", "/")
                v = v[2:] if v.startswith("./") else v
            if v and v in by[k]:
                target = by[k][v]
                break
        if target is not None:
            image_recs.append((where, target, rec))
            continue
        pid = rec.get("patient_id", "").strip() if breast_ok else ""
        lat_raw = rec.get("laterality", "").strip() if breast_ok else ""
        if pid and lat_raw:
            lat = laterality_code(lat_raw)
            sides = ("L", "R") if lat_raw.upper() in _BOTH else (lat,) if lat else ()
            if not sides:
                qc.add(STAGE, ann_path, f"invalid annotation: {where}: laterality must be L, R or B, got {lat_raw!r}")
                continue
            study = rec.get("study_id", "").strip()
            key_txt = f"patient_id={pid!r}, laterality={lat_raw!r}" + (f", study_id={study!r}" if study else "")
            dup = [seen_breasts.get((pid, sd, study)) for sd in sides]
            if any(d is not None for d in dup):
                first = next(d for d in dup if d is not None)
                qc.add(STAGE, ann_path, f"duplicate annotation: {where}: {key_txt} was given at line {first}; ignored",
                       severity="flag")
                continue
            for sd in sides:
                seen_breasts[(pid, sd, study)] = line_no
            targets = [r for sd in sides for r in by_breast.get((pid, sd), [])
                       if not study or str(r.get("study_id", "")) == study]
            if targets:
                breast_recs.append((where, targets, rec))
                continue
            qc.add(STAGE, ann_path, f"annotation matches no image: {where}: {key_txt}", severity="flag")
            continue
        key_txt = ", ".join(f"{k}={rec.get(k, '')!r}" for k in (*image_keys, "patient_id", "laterality") if rec.get(k))
        qc.add(STAGE, ann_path, f"annotation matches no image: {where}: {key_txt or 'empty key'}", severity="flag")
    for where, targets, rec in breast_recs:
        rec = {k: v for k, v in rec.items() if k not in ("patient_id", "laterality", "study_id")}
        for target in targets:
            _apply_record(target, rec, where, base, ann_path, qc)
    for where, target, rec in image_recs:
        _apply_record(target, rec, where, base, ann_path, qc)


def _apply_record(target: dict[str, Any], rec: dict[str, str], where: str, base: Path, ann_path: Path, qc: QCTable) -> None:
    try:
        values = _annotation_values(rec, base)
    except ValueError as e:
        qc.add(STAGE, ann_path, f"invalid annotation: {where}: {e}", image_id=target["image_id"])
        return
    for col, v in values.items():
        if col in _PROTECTED or v == "":
            continue
        target[col] = v
    for le in json.loads(values.get("lesions") or "[]"):
        if le.get("shape") == "mask" and not Path(le["path"]).exists():
            qc.add(STAGE, ann_path, f"mask file missing: {where}: {le['path']}", severity="flag", image_id=target["image_id"])
            add_flag(target, "mask_missing")


def _annotation_values(rec: dict[str, str], base: Path) -> dict[str, Any]:
    """Validate one annotation record; raise ValueError naming the bad field."""
    out: dict[str, Any] = dict(rec)
    if rec.get("classification") and "label" not in rec:
        c = rec["classification"].strip().lower()
        if c not in ("malignant", "benign", "normal"):
            raise ValueError(f"classification must be Malignant, Benign or Normal, got {rec['classification']!r}")
        out["label"] = 1 if c == "malignant" else 0
        if not rec.get("outcome"):
            out["outcome"] = c
    if "label" in rec:
        lab = rec["label"].strip().lower()
        if lab in ("", "nan", "na"):
            out["label"] = ""
        elif lab in ("1", "1.0", "true", "malignant"):
            out["label"] = 1
        elif lab in ("0", "0.0", "false", "benign", "normal"):
            out["label"] = 0
        else:
            raise ValueError(f"label must be 0, 1 or empty, got {rec['label']!r}")
    if rec.get("outcome"):
        o = rec["outcome"].strip().lower()
        if o not in OUTCOMES:
            raise ValueError(f"outcome must be malignant, benign or normal, got {rec['outcome']!r}")
        out["outcome"] = o
    if rec.get("density"):
        d = density_from_letter(rec["density"]) or density_from_number(rec["density"])
        if not d:
            raise ValueError(f"density must be A-D or 1-4, got {rec['density']!r}")
        out["density"] = d
    if rec.get("lesions"):
        try:
            items = json.loads(rec["lesions"])
            parse_lesions(items)
        except (json.JSONDecodeError, ValueError, TypeError, KeyError) as e:
            raise ValueError(f"lesions is not a valid lesion JSON list ({e})") from None
        rebase_mask_paths(items, folders=[base])
        out["lesions"] = json.dumps(items, separators=(",", ":"))
    return out
