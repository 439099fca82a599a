"""``/api/studies``: upload (admin), worklist, study detail, reading status, PACS pull."""

from __future__ import annotations

import functools
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from starlette.datastructures import UploadFile

from mammolens.serve.deps import MAX_DB_INT, CurrentUser, RowId, current_user, require_admin, service
from mammolens.serve.models import READING_STATUSES, Image, Study, utcnow
from mammolens.serve.routes._views import DEFAULT_REGIONS, may_open, study_detail, study_row

router = APIRouter(prefix="/api", tags=["studies"])


@router.get("/studies")
def worklist(
    request: Request,
    user: CurrentUser = Depends(current_user),
    status_: str | None = Query(None, alias="status", pattern="^(queued|scoring|scored|failed)$"),
    reading_status: str | None = Query(None, pattern="^(unread|in_progress|read)$"),
    flagged: bool | None = None,
    source: str | None = Query(None, pattern="^(upload|dicomweb|watch)$"),
    q: str | None = Query(None, max_length=64, description="patient ID or accession (prefix)"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_DB_INT),
) -> dict:
    """The worklist: highest exam-level AI score first (triage), unscored studies last.

    Readers do not see studies that are part of a reader study (they are blinded cases).
    """
    svc = service(request)
    op = svc.settings.operating_point
    cond = []
    if not user.is_admin:
        cond.append(Study.in_reader_study.is_(False))
    if status_:
        cond.append(Study.status == status_)
    if reading_status:
        cond.append(Study.reading_status == reading_status)
    if source:
        cond.append(Study.source == source)
    if flagged is True:
        cond.append(Study.exam_score >= op)
    elif flagged is False:
        cond.append((Study.exam_score < op) | Study.exam_score.is_(None))
    if q:
        like = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cond.append(Study.patient_id.like(like, escape="\\") | Study.accession.like(like, escape="\\"))
    n_img = (
        select(Image.study_id, func.count(Image.id).label("n")).group_by(Image.study_id).subquery()
    )
    with svc.db.snapshot() as s:  # items, total and queue counts of one moment
        total = s.scalar(select(func.count(Study.id)).where(*cond))
        rows = s.execute(
            select(Study, func.coalesce(n_img.c.n, 0))
            .outerjoin(n_img, n_img.c.study_id == Study.id)
            .where(*cond)
            .order_by(Study.exam_score.is_(None), Study.exam_score.desc(), Study.created_at, Study.id)
            .limit(limit)
            .offset(offset)
        ).all()
        items = [study_row(st, operating_point=op, n_images=int(n), admin=user.is_admin) for st, n in rows]
        counts = dict(s.execute(select(Study.status, func.count(Study.id)).group_by(Study.status)).all())
    return {"total": int(total or 0), "operating_point": op, "items": items, "queue": counts}


def _get_study(s, study_id: int, user: CurrentUser) -> Study:
    st = s.get(Study, study_id)
    if st is None or not may_open(s, user, st):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
    return st


@router.get("/studies/{study_id}")
def get_study(
    study_id: RowId,
    request: Request,
    user: CurrentUser = Depends(current_user),
    regions: int = Query(DEFAULT_REGIONS, ge=0, le=10, description="top-scoring regions listed per image"),
) -> dict:
    """The study, its images with scores and their ``regions`` highest-scoring heatmap
    regions (boxes in original pixel coordinates)."""
    svc = service(request)
    with svc.db.session() as s:
        st = _get_study(s, study_id, user)
        return study_detail(
            s, st, user, operating_point=svc.settings.operating_point,
            heatmap_path=functools.partial(svc.storage.resolve, "heatmaps"), regions=regions,
        )


async def _read_uploads(request: Request) -> list[tuple[str, bytes]]:
    svc = service(request)
    limit = svc.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, "uploads need a Content-Length")
    try:
        n = int(length)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "bad Content-Length") from None
    if n > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"upload too large ({n} bytes; limit {limit} bytes)"
        )
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send the DICOM files as multipart/form-data")
    try:
        form = await request.form(max_files=svc.settings.max_upload_files, max_fields=16)
    except HTTPException:
        raise
    except Exception as e:  # malformed multipart or too many files
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"bad multipart body: {e}") from None
    blobs: list[tuple[str, bytes]] = []
    total = 0
    try:
        for _key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue
            data = await value.read(limit + 1)
            total += len(data)
            if total > limit:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"upload too large (limit {limit} bytes)")
            # the name is only echoed back in rejections: it never becomes a path
            name = (value.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1][:128] or "upload"
            blobs.append((name, data))
    finally:
        await form.close()
    if not blobs:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "no files in the upload (field 'files')")
    return blobs


@router.post("/studies", status_code=status.HTTP_202_ACCEPTED)
async def upload(request: Request, _admin: CurrentUser = Depends(require_admin)) -> dict:
    """Upload DICOM mammograms (multipart, any field name); their studies are queued.

    Returns 202 with ``study_ids``, ``stored``, ``duplicates``, ``conflicts`` and
    ``rejected`` (file and reason for each file that is not a usable DICOM mammogram, or
    a different object with the SOP Instance UID of a stored one); 409 when every file
    was such a conflict; 422 when nothing was usable.
    """
    svc = service(request)
    blobs = await _read_uploads(request)
    result = await run_in_threadpool(svc.ingest_blobs, blobs, source="upload")
    body = result.to_dict()
    if not result.study_ids and result.conflicts and result.conflicts == len(result.qc.rejected):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {"message": "every file conflicts with a stored instance (same SOP Instance UID, different content)", **body},
        )
    if not result.study_ids:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {"message": "no DICOM mammogram in the upload", **body},
        )
    return body


class StudyPatch(BaseModel):
    reading_status: Literal["unread", "in_progress", "read"] | None = None
    truth: Literal[0, 1] | None = Field(None, description="admin only: ground truth")
    clear_truth: bool = False


@router.patch("/studies/{study_id}")
def patch_study(
    study_id: RowId, body: StudyPatch, request: Request, user: CurrentUser = Depends(current_user)
) -> dict:
    """Set the reading status (any user); set the ground truth (admins)."""
    svc = service(request)
    if (body.truth is not None or body.clear_truth) and not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required to set the truth")
    with svc.db.session() as s:
        st = _get_study(s, study_id, user)
        if st.in_reader_study and not user.is_admin and body.reading_status is not None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "reader-study cases are read in reader-study mode")
        if body.reading_status is not None:
            assert body.reading_status in READING_STATUSES
            st.reading_status = body.reading_status
        if body.truth is not None:
            st.truth = int(body.truth)
        if body.clear_truth:
            st.truth = None
        st.updated_at = utcnow()
        return study_detail(
            s, st, user, operating_point=svc.settings.operating_point,
            heatmap_path=functools.partial(svc.storage.resolve, "heatmaps"),
        )


@router.delete("/studies/{study_id}")
def delete_study(study_id: RowId, request: Request, _admin: CurrentUser = Depends(require_admin)) -> dict:
    svc = service(request)
    with svc.db.session() as s:
        st = s.get(Study, study_id)
        if st is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
        files = [("instances", im.file) for im in st.images] + [
            ("heatmaps", im.heatmap_file) for im in st.images if im.heatmap_file
        ] + [("outputs", o.file) for o in st.outputs]
        s.delete(st)
    for kind, name in files:
        svc.storage.delete(kind, name)
    return {"deleted": study_id}


@router.post("/studies/{study_id}/rescore", status_code=status.HTTP_202_ACCEPTED)
def rescore(study_id: RowId, request: Request, _admin: CurrentUser = Depends(require_admin)) -> dict:
    svc = service(request)
    with svc.db.session() as s:
        st = s.get(Study, study_id)
        if st is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
        if st.status == "scoring":
            raise HTTPException(status.HTTP_409_CONFLICT, "study is being scored")
        st.status, st.attempts, st.error, st.updated_at = "queued", 0, "", utcnow()
    if svc.worker is not None:
        svc.worker.notify()
    return {"id": study_id, "status": "queued"}


class PullBody(BaseModel):
    study_uid: str | None = Field(None, max_length=64, pattern=r"^[0-9.]+$")
    patient_id: str | None = Field(None, max_length=64)
    study_date: str | None = Field(None, max_length=17, pattern=r"^[0-9-]+$")
    limit: int = Field(20, ge=1, le=500)


@router.post("/pacs/pull", status_code=status.HTTP_202_ACCEPTED)
async def pull(body: PullBody, request: Request, _admin: CurrentUser = Depends(require_admin)) -> dict:
    """Find studies on the PACS (QIDO-RS, mammography only), retrieve them (WADO-RS) and queue them."""
    svc = service(request)
    if svc.pacs is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "no PACS configured (start with --pacs URL)")
    from mammolens.serve.dicomweb import pull_studies

    try:
        res = await run_in_threadpool(
            pull_studies,
            svc.pacs,
            svc.ingest_blobs,
            study_uid=body.study_uid,
            patient_id=body.patient_id,
            study_date=body.study_date,
            limit=body.limit,
        )
    except ConnectionError as e:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"PACS unreachable: {e}") from None
    return res


@router.get("/queue")
def queue(request: Request, _user: CurrentUser = Depends(current_user)) -> dict:
    svc = service(request)
    with svc.db.session() as s:
        counts = dict(s.execute(select(Study.status, func.count(Study.id)).group_by(Study.status)).all())
    return {"counts": counts, "worker": "off" if svc.worker is None else ("running" if svc.worker.alive else "stopped")}
