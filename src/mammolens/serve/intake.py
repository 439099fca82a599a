"""Study intake: check DICOM files, store them, and queue their studies for scoring.

Every way a study arrives (multipart upload, DICOMweb pull, watched folder) ends in
:func:`ingest_blobs`: each file is parsed, checked to be a DICOM mammogram (anything else
is rejected with a reason, never stored), stored under a digest name, and its study is
created or re-queued. Rejections are returned as :class:`~mammolens.qc.QCTable` rows.

What the header already disproves is refused here, before anything is stored: images
larger than the decoded-pixel cap (``max_pixels``: a small deflate-compressed file can
hold a huge image), and deflate-compressed data sets that inflate beyond what such an
image needs. Stored instances are immutable: a re-sent SOP Instance UID with identical
bytes is a duplicate; a different object with the same UID is refused and reported as
a conflict, and the stored file (and the scores computed from it) stay as they were.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from mammolens.errors import InputError
from mammolens.qc import QCTable
from mammolens.serve import queries
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
#: default cap on decoded pixels per image (rows x columns): above every full-field
#: mammography detector (about 28 Mpx), far below what exhausts the server's memory
MAX_IMAGE_PIXELS = 40_000_000
_DEFLATED = "1.2.840.10008.1.2.1.99"
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
    #: files refused because a different object with their SOP Instance UID is stored
    conflicts: int = 0
    qc: QCTable = field(default_factory=QCTable)

    def to_dict(self) -> dict:
        return {
            "study_ids": self.study_ids,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
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


def _mpx(n: int) -> str:
    return f"{n / 1e6:.1f} Mpx"


def _check_pixel_count(rows: int, cols: int, name: str, max_pixels: int) -> None:
    if rows * cols > max_pixels:
        raise InputError(
            name, f"image too large: {rows}x{cols} = {_mpx(rows * cols)} (limit {_mpx(max_pixels)} per image)"
        )


def _check_deflated(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse a deflate-compressed data set whose image is over the cap before pydicom
    inflates all of it in memory (a 274 KiB file can hold a 12000x12000 image).

    The header is read from a small inflated prefix; whatever the header says, inflating
    stops at the size a capped image (16-bit) plus its header can need.
    """
    import pydicom
    from pydicom.filereader import read_dataset, read_preamble

    fh = io.BytesIO(data)
    try:
        read_preamble(fh, False)
        pydicom.filereader._read_file_meta_info(fh)
    except Exception:  # noqa: BLE001 - pydicom reports it (not DICOM / corrupt) below
        return
    zipped = data[fh.tell():]
    limit = 2 * max_pixels + 16 * 1024 * 1024
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        head = inflater.decompress(zipped, 256 * 1024)
        try:
            ds = read_dataset(
                io.BytesIO(head), is_implicit_VR=False, is_little_endian=True,
                stop_when=lambda tag, *_: tag >= 0x7FE00010,
            )
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        except Exception:  # noqa: BLE001 - a header longer than the prefix: bounded inflate only
            rows = cols = 0
        _check_pixel_count(rows, cols, name, max_pixels)
        total = len(head)
        tail = inflater.unconsumed_tail
        while tail and total <= limit:
            total += len(inflater.decompress(tail, 4 * 1024 * 1024))
            tail = inflater.unconsumed_tail
    except zlib.error:
        raise InputError(name, "corrupt deflate-compressed data set") from None
    if total > limit:
        raise InputError(
            name, f"deflate-compressed data set inflates to more than {limit // (1024 * 1024)} MiB "
            f"(limit for images of at most {_mpx(max_pixels)})"
        )


def check_mammogram(data: bytes, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> CheckedInstance:
    """Parse ``data`` (one DICOM file called ``name``) and check it is a usable mammogram.

    Raises
    ------
    InputError
        With the reason: not DICOM, not a mammogram (modality / SOP class), no pixel data,
        no laterality, missing UIDs, an image with no rows/columns, more than
        ``max_pixels`` pixels, or pixel data its header disproves.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not data:
        raise InputError(name, "empty file")
    if _DEFLATED.encode() in data[:4096]:
        _check_deflated(data, name, max_pixels)
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
    _check_pixel_count(rows, cols, name, max_pixels)
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
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> IntakeResult:
    """Check, store and queue DICOM files given as ``(display name, bytes)``.

    Good files are stored even when others in the same call are rejected. A study that
    gains new images is (re-)queued for scoring. A re-sent instance (same SOP Instance
    UID, identical bytes) is a duplicate; a different object with a stored instance's
    UID is refused (a ``conflicts`` count and a QC row): stored files never change.
    """
    result = IntakeResult()
    checked: list[CheckedInstance] = []
    names: dict[int, str] = {}
    for name, data in blobs:
        try:
            inst = check_mammogram(data, name, max_pixels=max_pixels)
        except InputError as e:
            result.qc.add("intake", name, e.reason)
            continue
        names[id(inst)] = name
        checked.append(inst)
    by_study: dict[str, list[CheckedInstance]] = {}
    for inst in checked:
        name = names[id(inst)]
        file = digest_name(inst.sop_instance_uid, ".dcm")
        if not storage.write_new("instances", file, inst.data) and not storage.same_content(
            "instances", file, inst.data
        ):
            result.conflicts += 1
            result.qc.add("intake", name, _CONFLICT)
            continue
        by_study.setdefault(inst.study_uid, []).append(inst)
    for study_uid, insts in by_study.items():
        for attempt in range(5):
            try:
                sid, new, dup, clash = _upsert_study(db, study_uid, insts, source)
                break
            except IntegrityError:  # a concurrent request created the same study/instance
                if attempt == 4:
                    raise
        for inst in clash:
            result.conflicts += 1
            result.qc.add("intake", names[id(inst)], _CONFLICT)
        if not (new or dup):
            continue
        result.study_ids.append(sid)
        result.stored += new
        result.duplicates += dup
        log.info(
            "intake: study #%d via %s: %d new image(s), %d duplicate(s), %d conflict(s)",
            sid, source, new, dup, len(clash),
        )
    return result


_CONFLICT = (
    "conflict: a different object with this SOP Instance UID is already stored; refused "
    "(stored instances are never replaced: delete the study first to replace it)"
)


def _upsert_study(
    db: Database, study_uid: str, insts: list[CheckedInstance], source: str
) -> tuple[int, int, int, list[CheckedInstance]]:
    """Add ``insts`` to the study ``study_uid`` (created if new); returns (study id,
    new images, duplicates, instances whose UID belongs to an image of another study)."""
    with db.session() as s:
        elsewhere = queries.image_uids_in_other_studies(s, [f.sop_instance_uid for f in insts], study_uid)
        clash = [f for f in insts if f.sop_instance_uid in elsewhere]
        insts = [f for f in insts if f.sop_instance_uid not in elsewhere]
        if not insts:
            return 0, 0, 0, clash
        study = queries.study_by_uid(s, study_uid)
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
        known = queries.study_image_uids(s, study.id)
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
        return study.id, new, dup, clash
