"""Study intake: check DICOM files, store them, and queue their studies for scoring.

Every way a study arrives (multipart upload, DICOMweb pull, watched folder) ends in
:func:`ingest_blobs`: each file is parsed, checked to be a DICOM mammogram (anything else
is rejected with a reason, never stored), stored under a digest name, and its study is
created or re-queued. Rejections are returned as :class:`~mammolens.qc.QCTable` rows.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mammolens.errors import InputError
from mammolens.qc import QCTable
from mammolens.serve.db import Database
from mammolens.serve.models import Image, Study, utcnow
from mammolens.serve.storage import Storage, digest_name

log = logging.getLogger("mammolens.serve")

#: SOP classes accepted as mammograms (MG for presentation / for processing, DX images)
MAMMO_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
_VIEW_MEANINGS = {
    "cranio-caudal": "CC",
    "medio-lateral oblique": "MLO",
    "medio-lateral": "ML",
    "latero-medial": "LM",
    "exaggerated cranio-caudal": "XCCL",
    "cranio-caudal exaggerated laterally": "XCCL",
    "cranio-caudal exaggerated medially": "XCCM",
}


@dataclass
class CheckedInstance:
    """A DICOM mammogram that passed the checks, with the fields the service stores."""

    data: bytes
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    accession: str
    study_date: str
    manufacturer: str
    laterality: str
    view: str
    rows: int
    columns: int


@dataclass
class IntakeResult:
    """What an intake call did: study ids created/updated, instances stored, QC rows."""

    study_ids: list[int] = field(default_factory=list)
    stored: int = 0
    duplicates: int = 0
    qc: QCTable = field(default_factory=QCTable)

    def to_dict(self) -> dict:
        return {
            "study_ids": self.study_ids,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": [{"file": r.path, "reason": r.reason} for r in self.qc.rejected],
        }


def _view_of(ds) -> str:
    vp = str(getattr(ds, "ViewPosition", "") or "").strip().upper()
    if vp:
        return vp
    seq = getattr(ds, "ViewCodeSequence", None)
    if seq:
        meaning = str(getattr(seq[0], "CodeMeaning", "") or "").strip().lower()
        return _VIEW_MEANINGS.get(meaning, meaning.upper()[:8])
    return ""


def check_mammogram(data: bytes, name: str) -> CheckedInstance:
    """Parse ``data`` (one DICOM file called ``name``) and check it is a usable mammogram.

    Raises
    ------
    InputError
        With the reason: not DICOM, not a mammogram (modality / SOP class), no pixel data,
        no laterality, missing UIDs, or an image with no rows/columns.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not data:
        raise InputError(name, "empty file")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=False, force=False)
    except InvalidDicomError:
        raise InputError(name, "not a DICOM file (no DICM preamble)") from None
    except Exception as e:  # truncated or corrupt
        raise InputError(name, f"unreadable DICOM ({type(e).__name__})") from None
    modality = str(getattr(ds, "Modality", "") or "")
    if modality != "MG":
        raise InputError(name, f"not a mammogram (Modality {modality or 'missing'})")
    sop_class = str(getattr(ds, "SOPClassUID", "") or "")
    if sop_class not in MAMMO_SOP_CLASSES:
        raise InputError(name, f"not a mammography image object (SOP Class {sop_class or 'missing'})")
    if "PixelData" not in ds:
        raise InputError(name, "no pixel data")
    uids = {k: str(getattr(ds, k, "") or "") for k in ("SOPInstanceUID", "StudyInstanceUID")}
    for k, v in uids.items():
        if not v:
            raise InputError(name, f"missing {k}")
    lat = str(getattr(ds, "ImageLaterality", "") or getattr(ds, "Laterality", "") or "").upper()
    if lat not in ("L", "R"):
        raise InputError(name, f"laterality missing or not L/R ({lat or 'missing'})")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if rows < 8 or cols < 8:
        raise InputError(name, f"image too small ({rows}x{cols})")
    meta = _shared_checks(ds, name)
    view = meta.get("view") or _view_of(ds)
    return CheckedInstance(
        data=data,
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=str(getattr(ds, "SeriesInstanceUID", "") or ""),
        patient_id=str(getattr(ds, "PatientID", "") or "")[:64],
        accession=str(getattr(ds, "AccessionNumber", "") or "")[:64],
        study_date=str(getattr(ds, "StudyDate", "") or "")[:8],
        manufacturer=str(getattr(ds, "Manufacturer", "") or "")[:64],
        laterality=lat,
        view=str(view)[:8],
        rows=rows,
        columns=cols,
    )


def _shared_checks(ds, name: str) -> dict:
    """The shared reader's metadata and checks (tomosynthesis, multi-frame, photometric,
    dimensions, bit depth) from :mod:`mammolens.io`, reported against ``name``."""
    from mammolens.io import read_dicom_metadata, validate_mammogram

    try:
        meta = read_dicom_metadata(name, dataset=ds)
        validate_mammogram(meta, name)
    except InputError as e:
        raise InputError(name, e.reason) from None
    return meta


def ingest_blobs(
    db: Database,
    storage: Storage,
    blobs: Iterable[tuple[str, bytes]],
    *,
    source: str = "upload",
) -> IntakeResult:
    """Check, store and queue DICOM files given as ``(display name, bytes)``.

    Good files are stored even when others in the same call are rejected. A study that
    gains new images is (re-)queued for scoring. Duplicate instances (same SOP Instance
    UID) are ignored.
    """
    result = IntakeResult()
    checked: list[CheckedInstance] = []
    for name, data in blobs:
        try:
            checked.append(check_mammogram(data, name))
        except InputError as e:
            result.qc.add("intake", name, e.reason)
    by_study: dict[str, list[CheckedInstance]] = {}
    for inst in checked:
        by_study.setdefault(inst.study_uid, []).append(inst)
    for study_uid, insts in by_study.items():
        for f in insts:
            storage.write_bytes("instances", digest_name(f.sop_instance_uid, ".dcm"), f.data)
        for attempt in range(5):
            try:
                sid, new, dup = _upsert_study(db, study_uid, insts, source)
                break
            except IntegrityError:  # a concurrent request created the same study/instance
                if attempt == 4:
                    raise
        result.study_ids.append(sid)
        result.stored += new
        result.duplicates += dup
        log.info("intake: study #%d via %s: %d new image(s), %d duplicate(s)", sid, source, new, dup)
    return result


def _upsert_study(
    db: Database, study_uid: str, insts: list[CheckedInstance], source: str
) -> tuple[int, int, int]:
    with db.session() as s:
        study = s.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            first = insts[0]
            study = Study(
                study_uid=study_uid,
                patient_id=first.patient_id,
                accession=first.accession,
                study_date=first.study_date,
                manufacturer=first.manufacturer,
                source=source,
                status="queued",
            )
            s.add(study)
            s.flush()
        known = set(
            s.scalars(select(Image.sop_instance_uid).where(Image.study_id == study.id)).all()
        )
        new = dup = 0
        for f in insts:
            if f.sop_instance_uid in known:
                dup += 1
                continue
            known.add(f.sop_instance_uid)
            s.add(
                Image(
                    study_id=study.id,
                    sop_instance_uid=f.sop_instance_uid,
                    series_uid=f.series_uid,
                    file=digest_name(f.sop_instance_uid, ".dcm"),
                    laterality=f.laterality,
                    view=f.view,
                    rows=f.rows,
                    columns=f.columns,
                )
            )
            new += 1
        if new and study.status in ("scored", "failed", "queued"):
            study.status = "queued"
            study.error = ""
            study.attempts = 0
        study.updated_at = utcnow()
        s.flush()
        return study.id, new, dup
