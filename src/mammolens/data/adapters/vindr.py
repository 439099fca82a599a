"""VinDr-Mammo (PhysioNet): breast-level and finding annotations + DICOMs.

Expected layout (as distributed on PhysioNet)::

    SOURCE/
      breast-level_annotations.csv
      finding_annotations.csv
      metadata.csv                 (optional: age, manufacturer per SOP Instance UID)
      images/<study_id>/<image_id>.dicom

``breast-level_annotations.csv`` header (one row per image)::

    study_id,series_id,image_id,laterality,view_position,height,width,
    breast_birads,breast_density,split

``finding_annotations.csv`` header (one row per finding; ``No Finding`` rows have empty
boxes)::

    study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,
    breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split

Values: ``breast_birads`` ``"BI-RADS 1"``-``"BI-RADS 5"``; ``breast_density``
``"DENSITY A"``-``"DENSITY D"``; ``finding_categories`` a Python list literal such as
``"['Mass', 'Suspicious Calcification']"``; ``split`` ``training`` / ``test``.
``metadata.csv`` has ``SOP Instance UID``, ``Patient's Age`` (``"053Y"``),
``Manufacturer``, ``Manufacturer's Model Name`` among other columns.

Mapping to the manifest
-----------------------
* ``image_id`` as given; ``study_id`` as given; ``patient_id`` = ``study_id`` (the
  release is de-identified per exam and gives no patient identifier: each exam is
  treated as a woman);
* ``label``: **a proxy, not biopsy truth.** VinDr-Mammo has no pathology; an image is
  ``1`` when its breast-level BI-RADS is in ``malignant_birads`` (default ``4,5``:
  suspicious / highly suggestive of malignancy), else ``0``. Report results on VinDr as
  "BI-RADS 4-5 vs 1-3", not as cancer detection; change the set with
  ``--malignant-birads`` (e.g. ``5``). ``outcome``: ``malignant`` for the proxy
  positives, ``normal`` for BI-RADS 1, ``benign`` otherwise;
* ``lesions``: one ``box`` per finding with coordinates (``x0=xmin`` ... in original
  pixels), ``kind`` from the category (lower case, ``_`` for spaces), ``birads`` the
  finding's BI-RADS, ``pathology`` ``malignant`` when the finding's BI-RADS is in
  ``malignant_birads`` (the same proxy) else ``benign``;
* ``density`` A-D (``density_original`` keeps ``"DENSITY A"``), ``birads`` the breast
  BI-RADS, ``dataset_split`` the official split (``training``/``test``) -- the manifest's
  own ``split`` is left empty for ``mammolens split``; ``height``/``width`` as given;
* with ``read_headers`` (default) the DICOM header gives manufacturer, model and age;
  ``metadata.csv``, when present, fills what is still missing;
* ``dataset`` = ``vindr``.

QC: malformed lines (either CSV), invalid BI-RADS, missing or unreadable images and
boxes with non-numeric coordinates are rejected with file and line number; findings
for images absent from the breast-level table are flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.data.adapters._common import (
    STAGE,
    Track,
    apply_header,
    birads_value,
    density_from_letter,
    flag_rows,
    laterality_code,
    new_row,
    no_progress,
    parse_age,
    parse_birads_set,
    read_csv_rows,
    read_dicom_header,
)
from mammolens.data.lesions import dump_lesions
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "vindr"
SUMMARY = "VinDr-Mammo: breast-level + finding annotations, images/<study>/<image>.dicom (BI-RADS 4-5 proxy label)"

BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
METADATA_CSV = "metadata.csv"
REQUIRED = ("study_id", "image_id", "laterality", "view_position", "breast_birads", "breast_density")


def _image_path(source: Path, study: str, image: str) -> Path:
    base = source / "images" / study
    for ext in (".dicom", ".dcm"):
        p = base / f"{image}{ext}"
        if p.is_file():
            return p
    return base / f"{image}.dicom"


def load(
    source: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    malignant_birads: str | tuple[str, ...] = ("4", "5"),
    read_headers: bool = True,
) -> pd.DataFrame:
    """Read VinDr-Mammo (see the module docstring)."""
    source = Path(source)
    malignant = parse_birads_set(malignant_birads)
    breast_csv = source / BREAST_CSV
    if not breast_csv.is_file():
        raise InputError(breast_csv, "not found (expected the VinDr-Mammo layout)")
    _, records = read_csv_rows(breast_csv, qc, required=REQUIRED, delimiter=",")
    findings = _read_findings(source / FINDING_CSV, qc, malignant)
    meta_csv = _read_metadata(source / METADATA_CSV, qc)

    rows: list[dict[str, Any]] = []
    known: set[str] = set()
    for line_no, rec in track(records, len(records), "VinDr-Mammo images"):
        where = f" ({BREAST_CSV} line {line_no})"
        study, iid = rec["study_id"], rec["image_id"]
        birads = birads_value(rec["breast_birads"])
        if birads not in {"0", "1", "2", "3", "4", "5", "6"}:
            qc.add(STAGE, breast_csv, f"invalid row: line {line_no}: breast_birads {rec['breast_birads']!r}", image_id=iid)
            continue
        lat = laterality_code(rec["laterality"])
        if not study or not iid or not lat:
            qc.add(STAGE, breast_csv, f"invalid row: line {line_no}: empty study_id/image_id or laterality {rec['laterality']!r}", image_id=iid)
            continue
        path = _image_path(source, study, iid)
        if not path.is_file():
            qc.add(STAGE, path, f"file missing: {path.relative_to(source).as_posix()}{where}", image_id=iid)
            continue
        label = 1 if birads in malignant else 0
        row = new_row(
            image_id=iid,
            patient_id=study,
            study_id=study,
            path=str(path.resolve()),
            laterality=lat,
            view=rec["view_position"].strip().upper(),
            density=density_from_letter(rec["breast_density"]),
            density_original=rec["breast_density"],
            label=label,
            outcome="malignant" if label else ("normal" if birads == "1" else "benign"),
            birads=birads,
            dataset_split=rec.get("split", ""),
            series_id=rec.get("series_id", ""),
            height=_int_or_none(rec.get("height")),
            width=_int_or_none(rec.get("width")),
            dataset="vindr",
        )
        row["lesions"] = dump_lesions(findings.get(iid, []))
        known.add(iid)
        if read_headers:
            meta = read_dicom_header(path, qc, image_id=iid, where=where)
            if meta is None:
                continue
            apply_header(row, meta)
        m = meta_csv.get(iid) or meta_csv.get(row.get("sop_instance_uid", ""))
        if m:
            if not row.get("manufacturer"):
                from mammolens.io.dicom import canonical_manufacturer

                row["manufacturer"] = canonical_manufacturer(m.get("Manufacturer", ""))
            if not row.get("manufacturer_model"):
                row["manufacturer_model"] = m.get("Manufacturer's Model Name", "")
            if row["age"] != row["age"]:
                row["age"] = parse_age(m.get("Patient's Age", ""))
        rows.append(row)
    for iid in sorted(set(findings) - known):
        qc.add(STAGE, source / FINDING_CSV, f"finding for an image not ingested: {iid}", severity="flag", image_id=iid)
    flag_rows(rows, qc)
    return pd.DataFrame(rows)


def _int_or_none(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _categories(text: str) -> list[str]:
    t = text.strip()
    if not t:
        return []
    try:
        val = ast.literal_eval(t)
    except (ValueError, SyntaxError):
        val = [t]
    if isinstance(val, str):
        val = [val]
    return [str(v).strip() for v in val if str(v).strip()]


def _read_findings(path: Path, qc: QCTable, malignant: frozenset[str]) -> dict[str, list[dict[str, Any]]]:
    if not path.is_file():
        qc.add(STAGE, path, "file missing: no finding annotations; images get no lesions", severity="flag")
        return {}
    _, records = read_csv_rows(path, qc, required=("image_id", "finding_categories", "xmin", "ymin", "xmax", "ymax"), delimiter=",")
    out: dict[str, list[dict[str, Any]]] = {}
    for line_no, rec in records:
        iid = rec["image_id"]
        cats = [c for c in _categories(rec["finding_categories"]) if c.lower() != "no finding"]
        coords = [rec[k] for k in ("xmin", "ymin", "xmax", "ymax")]
        if all(c == "" for c in coords):
            if cats:
                qc.add(STAGE, path, f"finding without a box: line {line_no}: {', '.join(cats)}", severity="flag", image_id=iid)
            continue
        try:
            x0, y0, x1, y1 = (float(c) for c in coords)
        except ValueError:
            qc.add(STAGE, path, f"malformed line: line {line_no}: non-numeric box {coords!r}", image_id=iid)
            continue
        if x1 <= x0 or y1 <= y0:
            qc.add(STAGE, path, f"malformed line: line {line_no}: empty box {coords!r}", image_id=iid)
            continue
        fb = birads_value(rec.get("finding_birads", ""))
        kind = "_".join(cats[0].lower().split()) if cats else ""
        lesion: dict[str, Any] = {
            "shape": "box",
            "x0": round(x0, 2),
            "y0": round(y0, 2),
            "x1": round(x1, 2),
            "y1": round(y1, 2),
            "pathology": "malignant" if fb in malignant else "benign",
            "kind": kind,
            "birads": fb,
            "source": ";".join(cats),
        }
        out.setdefault(iid, []).append(lesion)
    return out


def _read_metadata(path: Path, qc: QCTable) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    try:
        _, records = read_csv_rows(path, qc, required=("SOP Instance UID",), delimiter=",")
    except InputError as e:
        qc.add(STAGE, path, f"metadata not used: {e.reason}", severity="flag")
        return {}
    return {rec["SOP Instance UID"]: rec for _, rec in records}
