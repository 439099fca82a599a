"""CBIS-DDSM (TCIA): description CSVs + DICOM tree + ROI masks.

Expected layout (the TCIA download, CSVs beside or above the image tree)::

    SOURCE/
      mass_case_description_train_set.csv
      mass_case_description_test_set.csv
      calc_case_description_train_set.csv
      calc_case_description_test_set.csv
      CBIS-DDSM/                                   (or the folders directly in SOURCE)
        Mass-Training_P_00001_LEFT_CC/<study uid or dated folder>/<series>/000000.dcm
        Mass-Training_P_00001_LEFT_CC_1/.../000000.dcm   (cropped image)
        Mass-Training_P_00001_LEFT_CC_1/.../000001.dcm   (ROI mask)

Mass CSV header::

    patient_id,breast_density,left or right breast,image view,abnormality id,
    abnormality type,mass shape,mass margins,assessment,pathology,subtlety,
    image file path,cropped image file path,ROI mask file path

Calcification CSVs have ``breast density`` (with a space) and ``calc type``, ``calc
distribution`` instead of the mass columns. ``pathology`` is ``MALIGNANT``, ``BENIGN``
or ``BENIGN_WITHOUT_CALLBACK``; ``image file path`` etc. look like
``Mass-Training_P_00001_LEFT_CC/1.3.6.1.4.1.9590.100.1.2.4221.../1.3.6.1.4.1.9590.../000000.dcm``.

Resolving the paths: the CSV path is tried as written (under ``SOURCE`` and
``SOURCE/CBIS-DDSM``). TCIA's downloader names the inner folders differently (dates and
series descriptions instead of UIDs), so when that fails the first component (e.g.
``Mass-Training_P_00001_LEFT_CC_1``) is looked up anywhere under ``SOURCE`` and the
DICOM inside is chosen: the only one for a full image; for an ROI mask the one in a
folder named ``*ROI mask*``, else the larger of the two files (masks are full size,
cropped images small).

Mapping to the manifest
-----------------------
* one image per ``(patient_id, side, view)``: the mass and calcification tables list the
  same full mammogram for a case with both, and several abnormalities of one image
  share it; their lesions are merged;
* ``image_id`` ``P_00001_LEFT_CC``; ``patient_id`` ``P_00001``; ``study_id`` =
  ``patient_id`` (one exam per case in DDSM);
* ``label`` = 1 if any abnormality of the image is ``MALIGNANT``; ``BENIGN`` and
  ``BENIGN_WITHOUT_CALLBACK`` are 0; ``outcome`` malignant/benign (CBIS-DDSM has no
  normal images);
* ``lesions``: one ``mask`` per abnormality (``path`` = the ROI mask DICOM, absolute),
  ``pathology``, ``kind`` (``mass`` / ``calcification``), ``birads`` (assessment),
  ``subtlety``, ``abnormality_id``, ``source`` (the pathology text);
* ``density`` 1-4 -> A-D (``density_original`` the number); ``dataset_split`` ``train``
  / ``test`` from the table the image came from; ``dataset`` = ``cbis-ddsm``;
* with ``read_headers`` (default) the full image's DICOM header gives its size.

QC: malformed lines, unknown pathology, missing full images are rejected (file + line);
a missing ROI mask drops that lesion and is flagged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.data.adapters._common import (
    STAGE,
    Track,
    add_flag,
    apply_header,
    density_from_number,
    flag_rows,
    laterality_code,
    new_row,
    no_progress,
    read_csv_rows,
    read_dicom_header,
)
from mammolens.data.lesions import dump_lesions
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "cbis-ddsm"
SUMMARY = "CBIS-DDSM: *_case_description_*_set.csv + DICOM tree + ROI masks"

PATHOLOGIES = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
_CSV_RE = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$", re.IGNORECASE)
REQUIRED = ("patient_id", "left or right breast", "image view", "pathology", "image file path")


def find_tables(source: Path) -> list[Path]:
    """The description CSVs in ``source`` or one level below."""
    found = [p for p in sorted(source.glob("*.csv")) if _CSV_RE.match(p.name)]
    if not found:
        found = [p for p in sorted(source.glob("*/*.csv")) if _CSV_RE.match(p.name)]
    if not found:
        raise InputError(source, "no CBIS-DDSM description CSVs (mass_/calc_case_description_train_set.csv ...)")
    return found


class _Resolver:
    """Find the DICOM a CSV path refers to, in the TCIA tree or as written."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._dirs: dict[str, Path] | None = None

    def _index(self) -> dict[str, Path]:
        if self._dirs is None:
            self._dirs = {}
            for dirpath, dirnames, _ in os.walk(self.source):
                for d in dirnames:
                    if d.startswith(("Mass-", "Calc-")):
                        self._dirs.setdefault(d, Path(dirpath) / d)
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        return self._dirs

    def resolve(self, rel: str, *, kind: str) -> Path | None:
        rel = rel.strip().replace("\\", "/").strip('"')
        if not rel:
            return None
        for base in (self.source, self.source / "CBIS-DDSM"):
            p = base / rel
            if p.is_file():
                return p
        top = rel.split("/")[0]
        folder = self._index().get(top)
        if folder is None:
            return None
        dcms = sorted(folder.rglob("*.dcm"))
        if not dcms:
            return None
        if len(dcms) == 1:
            return dcms[0]
        if kind == "mask":
            named = [d for d in dcms if any("roi mask" in part.lower() for part in d.relative_to(folder).parts)]
            if len(named) == 1:
                return named[0]
            return max(dcms, key=lambda d: d.stat().st_size)
        if kind == "cropped":
            named = [d for d in dcms if any("cropped" in part.lower() for part in d.relative_to(folder).parts)]
            if len(named) == 1:
                return named[0]
            return min(dcms, key=lambda d: d.stat().st_size)
        return max(dcms, key=lambda d: d.stat().st_size)


def load(
    source: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    read_headers: bool = True,
) -> pd.DataFrame:
    """Read CBIS-DDSM (see the module docstring)."""
    source = Path(source)
    resolver = _Resolver(source)
    images: dict[str, dict[str, Any]] = {}
    lesions: dict[str, list[dict[str, Any]]] = {}
    todo: list[tuple[Path, int, dict[str, str], str]] = []
    for table in find_tables(source):
        m = _CSV_RE.match(table.name)
        assert m is not None
        split = m.group(2).lower()
        _, records = read_csv_rows(table, qc, required=REQUIRED, delimiter=",")
        todo.extend((table, line_no, rec, split) for line_no, rec in records)
    for table, line_no, rec, split in track(todo, len(todo), "CBIS-DDSM abnormalities"):
        where = f" ({table.name} line {line_no})"
        pid = rec["patient_id"].strip()
        side = rec["left or right breast"].strip().upper()
        view = rec["image view"].strip().upper()
        lat = laterality_code(side)
        pathology = PATHOLOGIES.get(rec["pathology"].strip().upper())
        if not pid or not lat or not view:
            qc.add(STAGE, table, f"invalid row: line {line_no}: patient_id {pid!r}, side {side!r}, view {view!r}")
            continue
        iid = f"{pid}_{side}_{view}"
        if pathology is None:
            qc.add(STAGE, table, f"invalid row: line {line_no}: unknown pathology {rec['pathology']!r}", image_id=iid)
            continue
        if iid not in images:
            full = resolver.resolve(rec["image file path"], kind="full")
            if full is None:
                qc.add(STAGE, table, f"file missing: full mammogram {rec['image file path']!r}: line {line_no}", image_id=iid)
                continue
            dens_raw = (rec.get("breast_density") or rec.get("breast density") or "").strip()
            row = new_row(
                image_id=iid,
                patient_id=pid,
                study_id=pid,
                path=str(full.resolve()),
                laterality=lat,
                view=view,
                density=density_from_number(dens_raw),
                density_original=dens_raw,
                dataset_split=split,
                dataset="cbis-ddsm",
            )
            if read_headers:
                meta = read_dicom_header(full, qc, image_id=iid, where=where)
                if meta is None:
                    images[iid] = {"_rejected": True}
                    continue
                meta = dict(meta)
                meta["flags"] = [f for f in meta.get("flags", []) if f not in ("unknown_view", "unknown_laterality")]
                apply_header(row, meta)
            images[iid] = row
            lesions[iid] = []
        row = images[iid]
        if row.get("_rejected"):
            continue
        abn = rec.get("abnormality type", "").strip().lower()
        kind = "calcification" if abn.startswith("calc") else ("mass" if abn == "mass" else abn)
        mask = resolver.resolve(rec.get("ROI mask file path", ""), kind="mask")
        if mask is None:
            qc.add(STAGE, table, f"mask file missing: {rec.get('ROI mask file path', '')!r}: line {line_no}; lesion dropped", severity="flag", image_id=iid)
            add_flag(row, "mask_missing")
            row.setdefault("_pathologies", []).append(pathology)
            continue
        lesion: dict[str, Any] = {
            "shape": "mask",
            "path": str(mask.resolve()),
            "pathology": pathology,
            "kind": kind,
            "source": rec["pathology"].strip().upper(),
        }
        for src, key in (("assessment", "birads"), ("subtlety", "subtlety"), ("abnormality id", "abnormality_id")):
            if rec.get(src, "").strip():
                lesion[key] = rec[src].strip()
        lesions[iid].append(lesion)
        row.setdefault("_pathologies", []).append(pathology)
    rows = []
    for iid, row in images.items():
        if row.get("_rejected"):
            continue
        paths = row.pop("_pathologies", [])
        row["label"] = 1 if "malignant" in paths else 0
        row["outcome"] = "malignant" if "malignant" in paths else "benign"
        row["lesions"] = dump_lesions(lesions[iid])
        rows.append(row)
    flag_rows(rows, qc)
    return pd.DataFrame(rows)
