"""INbreast: ``INbreast.csv`` (or ``.xls``/``.xlsx``) + ``AllXML`` ROIs + ``AllDICOMs``.

Expected layout (the INbreast release folder)::

    SOURCE/
      INbreast.csv            ';'-separated (the release's INbreast.xls saved as CSV)
      AllDICOMs/22678622_61b13c59bcba149e_MG_R_CC_ANON.dcm
      AllXML/22678622.xml     (only images with annotated findings)

Table header (``Patient ID`` and ``Patient age`` read ``removed`` in the release)::

    Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads

``File Name`` is the first part of the DICOM name
``<File Name>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm``; ``ACR`` is the density 1-4
(blank for some images); ``Bi-Rads`` is 1, 2, 3, 4a, 4b, 4c, 5 or 6.

The XML files are Apple property lists (read with :mod:`plistlib`): a dict with
``Images`` -> list of dicts with ``ROIs`` -> list of dicts with ``Name`` (``Mass``,
``Calcification``, ``Cluster``, ``Spiculated Region``, ``Distortion``, ``Asymmetry``
...), ``NumberOfPoints`` and ``Point_px`` (strings ``"(x, y)"`` in pixels, origin
top-left).

Mapping to the manifest
-----------------------
* ``image_id`` = ``File Name``; ``patient_id`` = the patient hash from the DICOM file
  name (the table's ``Patient ID`` is used only when it is not ``removed``);
  ``study_id`` = ``<patient>_<Acquisition date>``;
* ``label``: **a proxy.** INbreast gives BI-RADS, not pathology for every image; an
  image is 1 when its BI-RADS is in ``malignant_birads`` (default ``4c,5,6``: 6 is
  biopsy-proven cancer, 5 and 4c are highly suspicious), else 0. Change with
  ``--malignant-birads``. ``outcome``: ``malignant`` for proxy positives, ``normal`` for
  BI-RADS 1, ``benign`` otherwise;
* ``lesions``: each ROI as a ``polygon`` (3+ points) or a ``point`` (1-2 points,
  e.g. an individual calcification), ``kind`` from ``Name`` (``calcification``,
  ``cluster``, ``mass``, ``spiculated_region``, ...). ``pathology``: in a proxy-positive
  image masses, clusters, spiculated regions, distortions and asymmetries are
  ``malignant``; individual calcifications ``unknown`` (most are benign); in other
  images every ROI is ``benign``;
* ``density`` ACR 1-4 -> A-D (``density_original`` the number); ``birads``;
  ``manufacturer`` from the header with ``read_headers`` (default); ``dataset`` =
  ``inbreast``.

QC: malformed lines, invalid BI-RADS and table rows without a DICOM are rejected (file
+ line); unreadable XML files are flagged (image kept without lesions).
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.data.adapters._common import (
    STAGE,
    Track,
    add_flag,
    apply_header,
    birads_value,
    density_from_number,
    flag_rows,
    laterality_code,
    new_row,
    no_progress,
    parse_age,
    parse_birads_set,
    read_dicom_header,
    read_table_rows,
)
from mammolens.data.lesions import dump_lesions
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "inbreast"
SUMMARY = "INbreast: INbreast.csv + AllXML/*.xml (plist ROIs) + AllDICOMs/*.dcm (BI-RADS 4c/5/6 proxy label)"

REQUIRED = ("Laterality", "View", "File Name", "Bi-Rads")
BIRADS = {"0", "1", "2", "3", "4", "4a", "4b", "4c", "5", "6"}
_POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)")
_MALIGNANT_KINDS = {"mass", "cluster", "spiculated_region", "distortion", "asymmetry", "assymetry"}


def find_table(source: Path) -> Path:
    for name in ("INbreast.csv", "INbreast.xlsx", "INbreast.xls"):
        for p in source.iterdir():
            if p.name.lower() == name.lower():
                return p
    raise InputError(source, "no INbreast.csv (or .xls/.xlsx) in this folder")


def _read_table(path: Path, qc: QCTable) -> list[tuple[int, dict[str, str]]]:
    return read_table_rows(path, qc, required=REQUIRED)[1]


def parse_xml(path: Path) -> list[dict[str, Any]]:
    """ROIs of one INbreast XML (plist) file as raw dicts ``{kind, points}``.

    Raises
    ------
    InputError
        When the file is not a readable plist of the INbreast shape.
    """
    try:
        with path.open("rb") as fh:
            data = plistlib.load(fh)
    except Exception as e:  # noqa: BLE001 - plistlib raises several types
        raise InputError(path, f"not a readable plist ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("Images"), list):
        raise InputError(path, "plist without an 'Images' list")
    out = []
    for image in data["Images"]:
        for roi in (image or {}).get("ROIs", []) or []:
            pts = []
            for s in roi.get("Point_px", []) or []:
                m = _POINT.fullmatch(str(s).strip())
                if not m:
                    raise InputError(path, f"unreadable point {s!r}")
                pts.append([float(m.group(1)), float(m.group(2))])
            name = str(roi.get("Name", "") or "").strip()
            out.append({"kind": "_".join(name.lower().split()), "name": name, "points": pts})
    return out


def _lesion(roi: dict[str, Any], positive: bool) -> dict[str, Any] | None:
    pts = roi["points"]
    if not pts:
        return None
    if positive:
        pathology = "malignant" if roi["kind"] in _MALIGNANT_KINDS else "unknown"
    else:
        pathology = "benign"
    base = {"pathology": pathology, "kind": roi["kind"], "source": roi["name"]}
    r2 = [[round(x, 2), round(y, 2)] for x, y in pts]
    if len(pts) >= 3:
        return {"shape": "polygon", "points": r2, **base}
    x = sum(p[0] for p in pts) / len(pts)
    y = sum(p[1] for p in pts) / len(pts)
    return {"shape": "point", "x": round(x, 2), "y": round(y, 2), **base}


def load(
    source: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    malignant_birads: str | tuple[str, ...] = ("4c", "5", "6"),
    read_headers: bool = True,
) -> pd.DataFrame:
    """Read INbreast (see the module docstring)."""
    source = Path(source)
    malignant = parse_birads_set(malignant_birads)
    table = find_table(source)
    records = _read_table(table, qc)
    dicom_dir = source / "AllDICOMs"
    xml_dir = source / "AllXML"
    dicoms: dict[str, Path] = {}
    if dicom_dir.is_dir():
        for p in dicom_dir.iterdir():
            if p.suffix.lower() == ".dcm":
                dicoms.setdefault(p.name.split("_")[0], p)
    rows: list[dict[str, Any]] = []
    for line_no, rec in track(records, len(records), "INbreast images"):
        fname = rec["File Name"].strip()
        if fname.endswith(".0"):
            fname = fname[:-2]
        birads = birads_value(rec["Bi-Rads"])
        lat = laterality_code(rec["Laterality"])
        if not fname or not lat:
            qc.add(STAGE, table, f"invalid row: line {line_no}: File Name {fname!r}, Laterality {rec['Laterality']!r}")
            continue
        if birads not in BIRADS:
            qc.add(STAGE, table, f"invalid row: line {line_no}: Bi-Rads {rec['Bi-Rads']!r}", image_id=fname)
            continue
        path = dicoms.get(fname)
        if path is None:
            qc.add(STAGE, dicom_dir / f"{fname}_*.dcm", f"file missing: no DICOM for File Name {fname}: {table.name} line {line_no}", image_id=fname)
            continue
        parts = path.name.split("_")
        pid_table = rec.get("Patient ID", "").strip()
        pid = pid_table if pid_table and pid_table.lower() != "removed" else (parts[1] if len(parts) > 1 else fname)
        date = rec.get("Acquisition date", "").strip()
        label = 1 if birads in malignant else 0
        acr = rec.get("ACR", "").strip()
        row = new_row(
            image_id=fname,
            patient_id=pid,
            study_id=f"{pid}_{date}" if date else pid,
            path=str(path.resolve()),
            laterality=lat,
            view=rec["View"].strip().upper(),
            age=parse_age(rec.get("Patient age", "")),
            density=density_from_number(acr),
            density_original=acr,
            label=label,
            outcome="malignant" if label else ("normal" if birads == "1" else "benign"),
            birads=birads,
            dataset="inbreast",
        )
        xml = xml_dir / f"{fname}.xml"
        if xml.is_file():
            try:
                rois = parse_xml(xml)
            except InputError as e:
                qc.add(STAGE, xml, f"unreadable XML: {e.reason}; image kept without lesions", severity="flag", image_id=fname)
                add_flag(row, "annotation_unreadable")
            else:
                row["lesions"] = dump_lesions([le for roi in rois if (le := _lesion(roi, bool(label)))])
        if read_headers:
            meta = read_dicom_header(path, qc, image_id=fname, where=f" ({table.name} line {line_no})")
            if meta is None:
                continue
            apply_header(row, meta)
        rows.append(row)
    flag_rows(rows, qc)
    return pd.DataFrame(rows)
