"""RSNA Screening Mammography Breast Cancer Detection (Kaggle, 2023).

Expected layout (as downloaded from the competition)::

    SOURCE/
      train.csv
      train_images/<patient_id>/<image_id>.dcm

``train.csv`` header (one row per image)::

    site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,
    implant,density,machine_id,difficult_negative_case

(``test.csv`` has ``site_id,patient_id,image_id,laterality,view,age,implant,machine_id,
prediction_id``; pass ``table="test.csv", images_dir="test_images"``: labels are then
unknown.)

Mapping to the manifest
-----------------------
* ``image_id``, ``patient_id`` as given; ``study_id`` = ``patient_id`` (the dataset has
  one screening exam per woman and no study identifier);
* ``laterality`` L/R, ``view`` as given (CC, MLO and the rarer AT, LM, ML, LMO; views
  other than CC/MLO are flagged ``non_standard_view``);
* ``label`` = ``cancer``; ``outcome`` = ``malignant`` if cancer, ``benign`` if
  biopsied without cancer, else ``normal``;
* ``density`` A-D as given (empty when missing); ``age``; ``site`` = ``site_id``;
  ``machine_id``, ``biopsy``, ``invasive``, ``birads`` (the ``BIRADS`` column),
  ``difficult_negative_case`` kept as extra columns; ``implant`` = 1 -> flag ``implant``;
* with ``read_headers`` (default) the DICOM header gives ``manufacturer``, model, size
  and the header's own QC flags; unreadable files are rejected. Without it only the
  file's existence is checked (fast);
* ``dataset`` = ``rsna``. No lesion annotations exist in this dataset.

QC: malformed CSV lines, rows with an unknown laterality or a non-0/1 ``cancer``, and
missing or unreadable image files are rejected with the CSV line number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.data.adapters._common import (
    STAGE,
    Track,
    add_flag,
    apply_header,
    density_from_letter,
    flag_rows,
    laterality_code,
    new_row,
    no_progress,
    parse_age,
    read_csv_rows,
    read_dicom_header,
)
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "rsna"
SUMMARY = "RSNA 2023: train.csv + train_images/<patient_id>/<image_id>.dcm"

REQUIRED = ("patient_id", "image_id", "laterality", "view")
_EXTRA = {"machine_id": "machine_id", "biopsy": "biopsy", "invasive": "invasive", "BIRADS": "birads",
          "difficult_negative_case": "difficult_negative_case"}


def load(
    source: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    table: str = "train.csv",
    images_dir: str = "train_images",
    read_headers: bool = True,
) -> pd.DataFrame:
    """Read the RSNA table and check (and optionally read) each DICOM."""
    source = Path(source)
    csv_path = source / table
    if not csv_path.is_file():
        raise InputError(csv_path, f"not found (expected the RSNA layout: {table} + {images_dir}/)")
    _, records = read_csv_rows(csv_path, qc, required=REQUIRED, delimiter=",")
    rows: list[dict[str, Any]] = []
    for line_no, rec in track(records, len(records), "RSNA images"):
        where = f" ({table} line {line_no})"
        pid, iid = _int_text(rec["patient_id"]), _int_text(rec["image_id"])
        path = source / images_dir / pid / f"{iid}.dcm"
        lat = laterality_code(rec["laterality"])
        if not pid or not iid:
            qc.add(STAGE, csv_path, f"invalid row: line {line_no}: empty patient_id or image_id")
            continue
        if not lat:
            qc.add(STAGE, csv_path, f"invalid row: line {line_no}: laterality {rec['laterality']!r} is not L or R", image_id=iid)
            continue
        cancer = rec.get("cancer", "").strip()
        if cancer not in ("", "0", "1", "0.0", "1.0"):
            qc.add(STAGE, csv_path, f"invalid row: line {line_no}: cancer {cancer!r} is not 0 or 1", image_id=iid)
            continue
        if not path.is_file():
            qc.add(STAGE, path, f"file missing: {path.relative_to(source).as_posix()}{where}", image_id=iid)
            continue
        row = new_row(
            image_id=iid,
            patient_id=pid,
            study_id=pid,
            path=str(path.resolve()),
            laterality=lat,
            view=rec["view"].strip().upper(),
            age=parse_age(rec.get("age", "")),
            density=density_from_letter(rec.get("density", "")),
            label=int(float(cancer)) if cancer else None,
            site=_int_text(rec.get("site_id", "")),
            dataset="rsna",
        )
        if cancer:
            biopsy = rec.get("biopsy", "").strip() in ("1", "1.0")
            row["outcome"] = "malignant" if row["label"] == 1 else ("benign" if biopsy else "normal")
        for src, col in _EXTRA.items():
            if src in rec:
                row[col] = _int_text(rec[src])
        if rec.get("implant", "").strip() in ("1", "1.0"):
            add_flag(row, "implant")
        if row["view"] not in ("CC", "MLO"):
            add_flag(row, "non_standard_view")
        if read_headers:
            meta = read_dicom_header(path, qc, image_id=iid, where=where)
            if meta is None:
                continue
            apply_header(row, meta)
        rows.append(row)
    flag_rows(rows, qc)
    return pd.DataFrame(rows)


def _int_text(v: str) -> str:
    """``"10006.0"`` -> ``"10006"``; other text stripped."""
    v = str(v).strip()
    if v.endswith(".0") and v[:-2].lstrip("-").isdigit():
        return v[:-2]
    return v
