"""EMBED, the Emory Breast Imaging Dataset (AWS Open Data): metadata + clinical tables + DICOMs.

Expected layout (as in the dataset's documentation, github.com/Emory-HITI/EMBED_Open_Data)::

    SOURCE/
      tables/EMBED_OpenData_metadata.csv   (or EMBED_OpenData_metadata_reduced.csv;
      tables/EMBED_OpenData_clinical.csv    also accepted directly in SOURCE)
      images/cohort_1/<empi_anon>/<acc_anon>/<SOPInstanceUID>.dcm   (any folder: see below)

``EMBED_OpenData_metadata.csv``: one row per file. Used columns: ``empi_anon`` (patient),
``acc_anon`` (exam), ``anon_dicom_path`` (the file), ``ImageLateralityFinal`` (``L``/``R``),
``ViewPosition`` (``CC``, ``MLO``, ...), ``FinalImageType`` (``2D``, ``C-view``, ...),
optional ``spot_mag`` (1 = spot compression / magnification view), ``ROI_coords``
(``[[ymin, xmin, ymax, xmax], ...]``), ``match_level``, ``Manufacturer``,
``ManufacturerModelName``, ``StudyDescription``.

``EMBED_OpenData_clinical.csv``: one row per finding (a negative exam has one row).
Used columns: ``empi_anon``, ``acc_anon``, ``side`` (``L``/``R``/``B``/empty: the
finding's breast), ``asses`` (the BI-RADS assessment as a letter: ``A`` 0 additional
evaluation, ``N`` 1 negative, ``B`` 2 benign, ``P`` 3 probably benign, ``S`` 4
suspicious, ``M`` 5 highly suggestive, ``K`` 6 known cancer), ``path_severity`` (the
most severe pathology of the finding's specimen: ``0`` invasive cancer, ``1``
non-invasive cancer (in situ), ``2`` high-risk lesion, ``3`` borderline, ``4`` benign,
``5`` negative (normal tissue), ``6`` non-breast cancer; empty = no pathology), optional
``bside`` (the pathology's side), ``desc`` (screening / diagnostic), ``tissueden``
(1-4 = BI-RADS A-D, 5 = male) and ``age_at_study``.

Files are found by ``anon_dicom_path``: as written when it exists, else by its longest
trailing part that exists under ``SOURCE`` or one of its folders (e.g. ``images/`` +
``cohort_1/<empi>/<acc>/<file>.dcm``), so the tables' absolute paths of the Emory NAS or
of the S3 bucket both work.

Join
----
Clinical findings go to images of the same patient and exam (``empi_anon``,
``acc_anon``) and breast, as the dataset's documentation prescribes (its section VIII):
``side`` ``L`` -> left images, ``R`` -> right images, ``B`` or empty -> both breasts. A
finding's pathology goes to the breast given by ``bside`` when present, else by ``side``.

Label (the definition chosen here)
----------------------------------
Per image, from the findings joined to its breast in its exam:

1. any pathology ``path_severity`` 0 or 1 (invasive or in-situ cancer) -> ``label`` 1,
   ``outcome`` ``malignant`` (``cancer_type`` ``invasive`` / ``in situ``);
2. else any pathology 2-6 (high-risk, borderline, benign, normal tissue, non-breast
   cancer) -> ``label`` 0, ``outcome`` ``benign``: a biopsied breast without breast
   cancer (``path_severity`` keeps the value, so high-risk lesions can be set apart);
3. else, no pathology and every finding BI-RADS 1 or 2 (``N``/``B``) -> ``label`` 0,
   ``outcome`` ``normal``: a negative or benign-appearing breast that was not biopsied;
4. else (BI-RADS 0, 3, 4, 5 or 6 without a pathology result, or no finding for the exam)
   -> ``label`` empty (unknown), and a QC flag.

Why: cancer is what a pathologist called cancer (in-situ included, as in screening
programmes' cancer-detection rates), so pathology outranks the radiologist's BI-RADS;
BI-RADS 1/2 without a biopsy is the usual screening-negative definition; an unresolved
recall (BI-RADS 0) or a suspicious finding with no recorded pathology is *not* a
negative, because the documentation warns (its section IX) that pathology is sometimes
recorded on the diagnostic exam only. This label has no follow-up window: a BI-RADS 1
exam followed by an interval cancer counts as negative. ``birads`` (0-6, the most severe
of the breast's findings) is kept for other definitions.

Images: only standard 2D full-field images (``FinalImageType`` ``2D``, ``spot_mag`` not
1) are ingested; C-view (synthetic 2D from tomosynthesis) and spot / magnification views
are left out, counted in one QC flag each. ``patient_id`` = ``empi_anon``, ``study_id`` =
``acc_anon``, ``image_id`` = the file name without suffix (the SOP Instance UID),
``density`` from ``tissueden``, ``exam_type`` ``screening`` / ``diagnostic`` from
``desc``; ROIs become ``box`` lesions (original pixels) whose pathology is the image's
(``malignant`` / ``benign``, else ``unknown``): an ROI marks what the radiologist saw,
which is the biopsied finding in most but not all multi-finding breasts.
``dataset`` = ``embed``. With ``read_headers`` (default) the DICOM header gives
manufacturer, model and size; the metadata table fills what is missing.

QC: malformed lines, missing files, invalid laterality and unreadable DICOMs are
rejected with file and line number; unknown labels, exams without clinical rows,
unparseable ROIs and male patients are flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from mammolens.data.adapters._common import (
    STAGE,
    Track,
    apply_header,
    density_from_number,
    flag_rows,
    laterality_code,
    new_row,
    no_progress,
    parse_age,
    read_csv_rows,
    read_dicom_header,
)
from mammolens.data.lesions import dump_lesions
from mammolens.errors import InputError
from mammolens.qc import QCTable

NAME = "embed"
SUMMARY = "EMBED (Emory): tables/EMBED_OpenData_{metadata,clinical}.csv + DICOMs (pathology label per breast, 2D FFDM)"

METADATA_NAMES = ("EMBED_OpenData_metadata.csv", "EMBED_OpenData_metadata_reduced.csv")
CLINICAL_NAMES = ("EMBED_OpenData_clinical.csv", "EMBED_OpenData_clinical_reduced.csv")
META_REQUIRED = ("empi_anon", "acc_anon", "anon_dicom_path", "ImageLateralityFinal", "ViewPosition", "FinalImageType")
CLIN_REQUIRED = ("empi_anon", "acc_anon", "side", "asses", "path_severity")
#: BI-RADS assessment letters of the clinical table -> category
ASSESSMENT = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
MALIGNANT_SEVERITY = {0, 1}
#: BI-RADS categories from least to most severe (0, a recall, outranks 1-3)
_BIRADS_RANK = {1: 0, 2: 1, 3: 2, 0: 3, 4: 4, 5: 5, 6: 6}
PATH_SEVERITY = {0: "invasive cancer", 1: "non-invasive cancer", 2: "high-risk lesion", 3: "borderline lesion",
                 4: "benign", 5: "negative", 6: "non-breast cancer"}


def find_table(source: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` in ``source/tables`` or ``source``."""
    for d in (source / "tables", source):
        for n in names:
            if (d / n).is_file():
                return d / n
    raise InputError(source, f"no {names[0]} (nor {', '.join(names[1:])}) in tables/ or here (expected the EMBED layout)")


def _key(v: str) -> str:
    """``"12345.0"`` -> ``"12345"`` (ids read back from spreadsheets gain a decimal)."""
    v = str(v).strip()
    return v[:-2] if v.endswith(".0") and v[:-2].isdigit() else v


def _int(v: str) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


class _Finder:
    """Locate ``anon_dicom_path`` under SOURCE (or a folder of SOURCE, e.g. ``images/``)
    by its longest trailing part that exists there."""

    def __init__(self, source: Path) -> None:
        self.bases = [source, *sorted(d for d in source.iterdir() if d.is_dir() and d.name != "tables")]
        self.last: tuple[Path, int] | None = None  # where the previous file was found (usually constant)

    def __call__(self, text: str) -> Path | None:
        p = Path(text)
        if p.is_absolute() and p.is_file():
            return p
        parts = tuple(x for x in PurePosixPath(text.replace("\\", "/")).parts if x not in ("/", ""))
        if self.last is not None and self.last[1] < len(parts):
            cand = self.last[0].joinpath(*parts[self.last[1]:])
            if cand.is_file():
                return cand
        for i in range(len(parts)):
            for base in self.bases:
                cand = base.joinpath(*parts[i:])
                if cand.is_file():
                    self.last = (base, i)
                    return cand
        return None


def load(
    source: Path,
    *,
    qc: QCTable,
    track: Track = no_progress,
    read_headers: bool = True,
    image_types: tuple[str, ...] = ("2D",),
) -> pd.DataFrame:
    """Read EMBED (see the module docstring)."""
    source = Path(source)
    meta_csv = find_table(source, METADATA_NAMES)
    clin_csv = find_table(source, CLINICAL_NAMES)
    _, meta_recs = read_csv_rows(meta_csv, qc, required=META_REQUIRED)
    _, clin_recs = read_csv_rows(clin_csv, qc, required=CLIN_REQUIRED)
    findings = _findings(clin_recs, clin_csv, qc)
    wanted = {t.strip().lower() for t in image_types}
    left_out: dict[str, int] = {}
    no_exam: set[tuple[str, str]] = set()
    find = _Finder(source)
    rows: list[dict[str, Any]] = []
    for line_no, rec in track(meta_recs, len(meta_recs), "EMBED images"):
        where = f" ({meta_csv.name} line {line_no})"
        kind = rec["FinalImageType"].strip()
        if kind.lower() not in wanted:
            left_out[f"FinalImageType {kind or 'empty'}"] = left_out.get(f"FinalImageType {kind or 'empty'}", 0) + 1
            continue
        if _int(rec.get("spot_mag", "")) == 1:
            left_out["spot compression / magnification view"] = left_out.get("spot compression / magnification view", 0) + 1
            continue
        pid, acc = _key(rec["empi_anon"]), _key(rec["acc_anon"])
        lat = laterality_code(rec["ImageLateralityFinal"])
        if not pid or not acc or not lat:
            qc.add(STAGE, meta_csv, f"invalid row: line {line_no}: empty empi_anon/acc_anon or laterality "
                                    f"{rec['ImageLateralityFinal']!r}")
            continue
        path = find(rec["anon_dicom_path"])
        if path is None:
            qc.add(STAGE, meta_csv, f"file missing: line {line_no}: {rec['anon_dicom_path']}")
            continue
        iid = PurePosixPath(path.name).stem
        row = new_row(
            image_id=iid, patient_id=pid, study_id=acc, path=str(path.resolve()), laterality=lat,
            view=rec["ViewPosition"].strip().upper(), dataset="embed",
        )
        exam = findings.get((pid, acc))
        if exam is None:
            no_exam.add((pid, acc))
            _label(row, [], [])
        else:
            _label(row, [f for f in exam if lat in f["sides"]], [f for f in exam if lat in f["path_sides"]])
            first = exam[0]
            row["density"] = first["density"]
            row["age"] = first["age"]
            row["exam_type"] = first["exam_type"]
            if first["male"]:
                qc.add(STAGE, path, f"male patient (tissueden 5){where}", severity="flag", image_id=iid)
        row["lesions"] = _rois(rec.get("ROI_coords", ""), row, meta_csv, line_no, qc)
        if read_headers:
            meta = read_dicom_header(path, qc, image_id=iid, where=where)
            if meta is None:
                continue
            apply_header(row, meta)
        if not row.get("manufacturer") and rec.get("Manufacturer"):
            from mammolens.io.dicom import canonical_manufacturer

            row["manufacturer"] = canonical_manufacturer(rec["Manufacturer"])
        if not row.get("manufacturer_model") and rec.get("ManufacturerModelName"):
            row["manufacturer_model"] = rec["ManufacturerModelName"]
        if row["label"] is None:
            qc.add(STAGE, path, f"label unknown: {row['label_note']}{where}", severity="flag", image_id=iid)
        rows.append(row)
    for why, n in sorted(left_out.items()):
        qc.add(STAGE, meta_csv, f"not 2D FFDM: {n} image(s) left out ({why})", severity="flag")
    for pid, acc in sorted(no_exam):
        qc.add(STAGE, clin_csv, f"exam without clinical rows: empi_anon {pid}, acc_anon {acc}; its images have no label",
               severity="flag")
    flag_rows(rows, qc)
    return pd.DataFrame(rows)


def _findings(recs: list[tuple[int, dict[str, str]]], path: Path, qc: QCTable) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Clinical rows by (patient, exam), with the breasts each finding / pathology covers."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line_no, rec in recs:
        pid, acc = _key(rec["empi_anon"]), _key(rec["acc_anon"])
        if not pid or not acc:
            qc.add(STAGE, path, f"invalid row: line {line_no}: empty empi_anon or acc_anon")
            continue
        side = rec["side"].strip().upper()
        sides = {"L"} if side == "L" else {"R"} if side == "R" else {"L", "R"}
        bside = rec.get("bside", "").strip().upper()
        path_sides = {"L"} if bside == "L" else {"R"} if bside == "R" else {"L", "R"} if bside == "B" else sides
        sev = _int(rec["path_severity"])
        if rec["path_severity"].strip() and (sev is None or sev not in PATH_SEVERITY):
            qc.add(STAGE, path, f"invalid row: line {line_no}: path_severity {rec['path_severity']!r} not 0-6")
            continue
        asses = rec["asses"].strip().upper()
        den = rec.get("tissueden", "").strip()
        desc = rec.get("desc", "").lower()
        out.setdefault((pid, acc), []).append({
            "sides": sides,
            "path_sides": path_sides,
            "severity": sev,
            "birads": ASSESSMENT.get(asses),
            "density": density_from_number(den),
            "male": _int(den) == 5,
            "age": parse_age(rec.get("age_at_study", "")),
            "exam_type": "screening" if "screen" in desc else "diagnostic" if "diag" in desc else "",
        })
    return out


def _label(row: dict[str, Any], breast: list[dict[str, Any]], path_findings: list[dict[str, Any]]) -> None:
    """Apply the label definition of the module docstring to one image's row."""
    sevs = [f["severity"] for f in path_findings if f["severity"] is not None]
    birads = [f["birads"] for f in breast if f["birads"] is not None]
    row["birads"] = str(max(birads, key=_BIRADS_RANK.__getitem__)) if birads else ""
    row["path_severity"] = str(min(sevs)) if sevs else ""
    row["label_note"] = ""
    if sevs and min(sevs) in MALIGNANT_SEVERITY:
        row.update(label=1, outcome="malignant", cancer_type="invasive" if min(sevs) == 0 else "in situ")
    elif sevs:
        row.update(label=0, outcome="benign", cancer_type="")
    elif breast and all(f["birads"] in (1, 2) for f in breast):
        row.update(label=0, outcome="normal", cancer_type="")
    else:
        row.update(label=None, outcome="", cancer_type="")
        if not breast:
            row["label_note"] = "no clinical finding for this breast in this exam"
        else:
            cats = sorted({str(f["birads"]) if f["birads"] is not None else "?" for f in breast})
            row["label_note"] = f"BI-RADS {', '.join(cats)} without a pathology result"


def _rois(text: str, row: dict[str, Any], path: Path, line_no: int, qc: QCTable) -> str:
    """``[[ymin, xmin, ymax, xmax], ...]`` -> ``box`` lesions with the image's pathology."""
    t = str(text or "").strip()
    if not t or t in ("[]", "nan"):
        return ""
    try:
        val = ast.literal_eval(t)
        boxes = [tuple(float(c) for c in b) for b in val]
        if any(len(b) != 4 for b in boxes):
            raise ValueError("a box needs 4 numbers")
    except (ValueError, SyntaxError, TypeError) as e:
        qc.add(STAGE, path, f"ROI not used: line {line_no}: ROI_coords {t[:60]!r} ({e})", severity="flag",
               image_id=row["image_id"])
        return ""
    patho = row.get("outcome") if row.get("outcome") in ("malignant", "benign") else "unknown"
    les = [{"shape": "box", "x0": x0, "y0": y0, "x1": x1, "y1": y1, "pathology": patho, "kind": "roi", "source": "EMBED ROI"}
           for (y0, x0, y1, x1) in boxes if x1 > x0 and y1 > y0]
    return dump_lesions(les)
