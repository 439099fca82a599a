"""Any folder tree of DICOM mammograms, with labels from an optional annotations CSV.

Expected layout: ``SOURCE/`` holding DICOM files at any depth, with any names (``.dcm``,
``.dicom`` or no extension). Hidden files and ``DICOMDIR`` are skipped; every other file
must be a mammogram.

Metadata come from the DICOM header (:func:`mammolens.io.dicom.read_dicom_metadata`):
``image_id`` = SOP Instance UID, ``patient_id`` = Patient ID, ``study_id`` = Study
Instance UID, laterality, view, canonical manufacturer, model, age, rows/columns.

Annotations (``annotations=PATH``, CLI ``--annotations``): a CSV with one row per image
and a key column, tried in this order:

* ``sop_instance_uid`` -- the SOP Instance UID of the file;
* ``path`` -- the file's path relative to ``SOURCE`` (``/`` separators);
* ``image_id`` -- the manifest image id (the SOP Instance UID here).

Recognised columns: ``label`` (0/1, empty = unknown), ``outcome``
(malignant/benign/normal), ``density`` (A-D or 1-4), ``lesions`` (JSON list, see
:mod:`mammolens.data.lesions`; a relative ``mask`` path is resolved against the CSV's
folder); any other non-empty value overrides the header's (e.g. ``age``, ``site``) or is
added as a column. ``mammolens synth`` writes such a file (``OUT/annotations.csv``).

QC
--
Rejected: files that are not DICOM, corrupt headers, modality other than MG,
tomosynthesis or multi-frame objects, implausible sizes or colour images (see
:func:`mammolens.io.dicom.validate_mammogram`), duplicate SOP Instance UIDs, and
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
    metadata_reader,
    new_row,
    no_progress,
    read_csv_rows,
)
from mammolens.data.lesions import parse_lesions
from mammolens.data.manifest import OUTCOMES
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "dicom"
SUMMARY = "a folder tree of DICOM mammograms (+ --annotations CSV joined on SOP UID, path or image_id)"

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
    from mammolens.io.dicom import validate_mammogram

    source = Path(source)
    if source.is_file():
        files, root = [source], source.parent
    elif source.is_dir():
        root = source
        exclude = {Path(annotations).resolve()} if annotations else set()
        files = list_files(source, exclude=exclude)
    else:
        raise InputError(source, "not found")
    rows: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path, meta, err in track(read_headers(files, workers=workers), len(files), "reading DICOM headers"):
        if meta is not None:
            try:
                validate_mammogram(meta, path, require_pixels=False)
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
            dataset="dicom",
            _rel=rel,
        )
        apply_header(row, meta)
        if not row["patient_id"]:
            qc.add(STAGE, path, "missing Patient ID: the image cannot be assigned to a patient", image_id=image_id)
            continue
        rows.append(row)
    if annotations:
        _join_annotations(rows, Path(annotations), qc)
    flag_rows(rows, qc)
    df = pd.DataFrame(rows)
    return df.drop(columns=["_rel"]) if "_rel" in df.columns else df


def _reason(reason: str) -> str:
    """Give header-level reasons a groupable prefix."""
    low = reason.lower()
    if low.startswith("not a mammogram"):
        return reason
    if "not a dicom" in low or "not a readable dicom" in low:
        return f"not DICOM: {reason}"
    return f"rejected DICOM: {reason}"


def _join_annotations(rows: list[dict[str, Any]], ann_path: Path, qc: QCTable) -> None:
    """Join an annotations CSV onto ``rows`` in place."""
    header, records = read_csv_rows(ann_path, qc)
    keys = [k for k in ("sop_instance_uid", "path", "image_id") if k in header]
    if not keys:
        raise InputError(ann_path, "annotations need a key column: sop_instance_uid, path or image_id")
    by = {
        "sop_instance_uid": {r.get("sop_instance_uid", ""): r for r in rows if r.get("sop_instance_uid")},
        "path": {r["_rel"]: r for r in rows},
        "image_id": {r["image_id"]: r for r in rows},
    }
    base = ann_path.resolve().parent
    for line_no, rec in records:
        where = f"line {line_no}"
        target = None
        for k in keys:
            v = rec.get(k, "")
            if k == "path":
                v = v.replace("\\", "/")
                v = v[2:] if v.startswith("./") else v
            if v and v in by[k]:
                target = by[k][v]
                break
        if target is None:
            key_txt = ", ".join(f"{k}={rec.get(k, '')!r}" for k in keys if rec.get(k))
            qc.add(STAGE, ann_path, f"annotation matches no image: {where}: {key_txt or 'empty key'}", severity="flag")
            continue
        try:
            values = _annotation_values(rec, base)
        except ValueError as e:
            qc.add(STAGE, ann_path, f"invalid annotation: {where}: {e}", image_id=target["image_id"])
            continue
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
        for le in items:
            if le.get("shape") == "mask" and not Path(str(le["path"])).is_absolute():
                le["path"] = str(base / str(le["path"]))
        out["lesions"] = json.dumps(items, separators=(",", ":"))
    return out
