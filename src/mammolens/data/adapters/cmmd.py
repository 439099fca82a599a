"""CMMD, The Chinese Mammography Database (TCIA): DICOM tree + per-breast clinical sheet.

Expected layout (as the NBIA Data Retriever downloads it from TCIA; ``SOURCE`` may be the
``CMMD`` folder itself or a folder holding it)::

    SOURCE/
      CMMD_clinicaldata_revision.xlsx      (or .csv; or give it with annotations=PATH)
      CMMD/
        D1-0001/                           one folder per patient (D1-xxxx, D2-xxxx)
          <date>-NA-NA-<n>/                the study
            1.000000-NA-<n>/               the series
              1-1.dcm
              1-2.dcm                      one file per view of each imaged breast
      metadata.csv                         (NBIA's download list: ignored, as are other
                                            non-DICOM files: .csv .xlsx .xls .txt .json .pdf)

The clinical sheet has one row per breast::

    ID1, LeftRight, Age, number, abnormality, classification, subtype

``ID1`` the patient (= the DICOM Patient ID), ``LeftRight`` ``L``/``R``, ``Age`` in
years, ``number`` the number of images of that breast, ``abnormality`` ``calcification``
/ ``mass`` / ``both``, ``classification`` ``Benign`` / ``Malignant`` (biopsy-confirmed),
``subtype`` the molecular subtype of the D2 cases (Luminal A, Luminal B, HER2-enriched,
triple negative; empty otherwise).

Mapping to the manifest
-----------------------
* from each DICOM header (:func:`mammolens.io.dicom.read_dicom_metadata`): ``image_id`` =
  SOP Instance UID, ``patient_id`` = Patient ID, ``study_id`` = Study Instance UID,
  ``laterality`` from *Image Laterality*, ``view`` from the *View Code Sequence* (SNOMED
  CT 399162004 = CC, 399368009 = MLO; CMMD has no *View Position*), manufacturer, size.
  The images are 8-bit with a ``SIGMOID`` VOI LUT function, which the reader applies
  (PS3.3 C.11.2.1.3.1);
* joined with the clinical sheet on patient + laterality
  (:func:`mammolens.data.adapters.dicom.join_records`, the same join as ``ingest dicom
  --annotations``): ``label`` 1 for ``Malignant``, 0 for ``Benign`` (biopsy truth, per
  breast: every image of the breast gets it); ``outcome`` ``malignant`` / ``benign``;
  ``age`` = ``Age``; ``abnormality``, ``subtype`` and ``cmmd_images`` (= ``number``) as
  columns; ``cmmd_subset`` = ``D1`` or ``D2`` (the ID prefix); ``dataset`` = ``cmmd``;
* an imaged breast without a clinical row keeps an empty (unknown) label and gets a QC
  flag: it is not assumed normal.

QC: non-DICOM or rejected DICOM files (see ``ingest dicom``), sheet rows with an invalid
``LeftRight`` or ``classification`` are rejected with file and row number; sheet rows
that match no image, duplicate rows for one breast and breasts without a sheet row are
flagged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mammolens.data.adapters._common import (
    STAGE,
    Track,
    flag_rows,
    no_progress,
    read_table_rows,
)
from mammolens.data.adapters.dicom import join_records, list_files, rows_from_files
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "cmmd"
SUMMARY = "CMMD (TCIA): CMMD/D1-xxxx/<study>/<series>/1-N.dcm + CMMD_clinicaldata_revision.xlsx (biopsy label per breast)"

SHEET_NAMES = ("CMMD_clinicaldata_revision.xlsx", "CMMD_clinicaldata_revision.csv", "CMMD_clinicaldata.xlsx", "CMMD_clinicaldata.csv")
REQUIRED = ("ID1", "LeftRight", "classification")
_NOT_DICOM = {".csv", ".xlsx", ".xls", ".txt", ".json", ".pdf", ".md", ".html", ".xml"}
_PATIENT = re.compile(r"^D\d-\d{4}$")


def find_sheet(source: Path) -> Path:
    """The clinical sheet in ``source`` or one folder below (the official names first)."""
    cands = [p for p in (*source.glob("*"), *source.glob("*/*")) if p.is_file()]
    by_name = {p.name.lower(): p for p in sorted(cands)}
    for name in SHEET_NAMES:
        if name.lower() in by_name:
            return by_name[name.lower()]
    other = sorted(p for p in cands if "clinical" in p.name.lower() and p.suffix.lower() in (".xlsx", ".xls", ".csv"))
    if other:
        return other[0]
    raise InputError(source, "no CMMD clinical sheet (CMMD_clinicaldata_revision.xlsx or .csv) here or one folder "
                             "below; give it with --annotations PATH")


def load(
    source: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    annotations: str | Path | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Read CMMD (see the module docstring); ``annotations`` is the clinical sheet."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "not a folder (expected the CMMD download)")
    sheet = Path(annotations) if annotations else find_sheet(source)
    if not sheet.is_file():
        raise InputError(sheet, "clinical sheet not found")
    _, recs = read_table_rows(sheet, qc, required=REQUIRED)
    files = [p for p in list_files(source, exclude={sheet.resolve()}) if p.suffix.lower() not in _NOT_DICOM]
    if not files:
        raise InputError(source, "no DICOM files found (expected CMMD/D1-xxxx/<study>/<series>/1-N.dcm)")
    rows = rows_from_files(files, source, qc=qc, track=track, workers=workers, dataset="cmmd")

    records: list[tuple[int, dict[str, str]]] = []
    for line_no, rec in recs:
        pid = rec["ID1"].strip()
        if not pid:
            qc.add(STAGE, sheet, f"invalid row: row {line_no}: empty ID1")
            continue
        records.append((line_no, {
            "patient_id": pid,
            "laterality": rec["LeftRight"].strip(),
            "classification": rec["classification"].strip(),
            "age": rec.get("Age", "").strip(),
            "abnormality": rec.get("abnormality", "").strip().lower(),
            "subtype": rec.get("subtype", "").strip(),
            "cmmd_images": rec.get("number", "").strip(),
        }))
    header = ["patient_id", "laterality", "classification", "age", "abnormality", "subtype", "cmmd_images"]
    join_records(rows, header, records, sheet, qc)

    for r in rows:
        pid = str(r["patient_id"])
        r["cmmd_subset"] = pid.split("-")[0] if _PATIENT.match(pid) else ""
        r.pop("classification", None)  # now label + outcome
        if r.get("label") is None or r.get("label") == "":
            r["label"] = None
            qc.add(STAGE, r["path"], f"no clinical row: {pid} {r.get('laterality') or '?'} is not in {sheet.name}; label unknown",
                   severity="flag", image_id=r["image_id"])
    flag_rows(rows, qc)
    df = pd.DataFrame(rows)
    return df.drop(columns=["_rel"]) if "_rel" in df.columns else df
