"""``/api/studies``: upload (admin), worklist, study detail, reading status, PACS pull."""

from __future__ import annotations

import functools

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from mammolens.serve import queries
from mammolens.serve.deps import (
    MAX_DB_INT,
    Admin,
    CurrentUser,
    DbSession,
    RowId,
    ServiceDep,
    SignedIn,
    SnapshotSession,
)
from mammolens.serve.models import Study
from mammolens.serve.routes._views import DEFAULT_REGIONS, study_detail, study_row
from mammolens.serve.schemas import (
    Deleted,
    IntakeResult,
    PullBody,
    PullResult,
    Queue,
    Requeued,
    StudyDetail,
    StudyPatch,
    Worklist,
)
from mammolens.serve.service import Service

router = APIRouter(prefix="/api", tags=["studies"])
#: responses that leave a field out (admin-only ones) keep it out instead of sending null
_SPARSE = {"response_model_exclude_unset": True}


@router.get("/studies", response_model=Worklist, **_SPARSE)
def worklist(
    s: SnapshotSession,  # items, total and queue counts of one moment
    svc: ServiceDep,
    user: SignedIn,
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
    op = svc.settings.operating_point
    page = queries.worklist(
        s, admin=user.is_admin, operating_point=op, status=status_, reading_status=reading_status,
        source=source, flagged=flagged, q=q, limit=limit, offset=offset,
    )
    items = [study_row(st, operating_point=op, n_images=n, admin=user.is_admin) for st, n in page.rows]
    return {"total": page.total, "operating_point": op, "items": items, "queue": page.queue}


def _study(s: Session, study_id: int, user: CurrentUser) -> Study:
    st = queries.viewable_study(s, study_id, user)
    if st is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
    return st


def _detail(s: Session, svc: Service, st: Study, user: CurrentUser, *, regions: int = DEFAULT_REGIONS) -> dict:
    return study_detail(
        st, user, show_ai=queries.ai_visible(s, user, st), operating_point=svc.settings.operating_point,
        heatmap_path=functools.partial(svc.storage.resolve, "heatmaps"), regions=regions,
    )


@router.get("/studies/{study_id}", response_model=StudyDetail, **_SPARSE)
def get_study(
    study_id: RowId,
    s: DbSession,
    svc: ServiceDep,
    user: SignedIn,
    regions: int = Query(DEFAULT_REGIONS, ge=0, le=10, description="top-scoring regions listed per image"),
) -> dict:
    """The study, its images with scores (hidden from a reader's blinded case) and their
    ``regions`` highest-scoring heatmap regions (boxes in original pixel coordinates),
    and the hanging protocol's image ids."""
    return _detail(s, svc, _study(s, study_id, user), user, regions=regions)


async def _read_uploads(request: Request, svc: Service) -> list[tuple[str, bytes]]:
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


@router.post(
    "/studies",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IntakeResult,
    responses={
        409: {"description": "every file conflicts with a stored instance"},
        413: {"description": "the upload is over the size limit"},
        422: {"description": "no usable DICOM mammogram in the upload"},
    },
)
async def upload(request: Request, svc: ServiceDep, _admin: Admin) -> dict:
    """Upload DICOM mammograms (multipart, any field name); their studies are queued.

    Returns 202 with ``study_ids``, ``stored``, ``duplicates``, ``conflicts`` and
    ``rejected`` (file and reason for each file that is not a usable DICOM mammogram, or
    a different object with the SOP Instance UID of a stored one); 409 when every file
    was such a conflict; 422 when nothing was usable (the same fields and a ``message``
    under ``detail``).
    """
    blobs = await _read_uploads(request, svc)
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


@router.patch("/studies/{study_id}", response_model=StudyDetail, **_SPARSE)
def patch_study(study_id: RowId, body: StudyPatch, s: DbSession, svc: ServiceDep, user: SignedIn) -> dict:
    """Set the reading status (any user); set the ground truth (admins)."""
    if (body.truth is not None or body.clear_truth) and not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required to set the truth")
    st = _study(s, study_id, user)
    if st.in_reader_study and not user.is_admin and body.reading_status is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "reader-study cases are read in reader-study mode")
    queries.update_study(st, reading_status=body.reading_status, truth=body.truth, clear_truth=body.clear_truth)
    return _detail(s, svc, st, user)


@router.delete("/studies/{study_id}", response_model=Deleted)
def delete_study(study_id: RowId, s: DbSession, svc: ServiceDep, _admin: Admin) -> dict:
    """Delete a study, its images, scores, reads and stored files."""
    st = queries.get_study(s, study_id)
    if st is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
    files = queries.delete_study(s, st)
    s.commit()  # the rows go first: a failed commit leaves every file in place
    for kind, name in files:
        svc.storage.delete(kind, name)
    return {"deleted": study_id}


@router.post("/studies/{study_id}/rescore", status_code=status.HTTP_202_ACCEPTED, response_model=Requeued)
def rescore(study_id: RowId, s: DbSession, svc: ServiceDep, _admin: Admin) -> dict:
    """Queue a study for scoring again (409 while it is being scored)."""
    st = queries.get_study(s, study_id)
    if st is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
    if st.status == "scoring":
        raise HTTPException(status.HTTP_409_CONFLICT, "study is being scored")
    queries.requeue_study(st)
    s.commit()  # queued before the worker is woken to look for it
    if svc.worker is not None:
        svc.worker.notify()
    return {"id": study_id, "status": "queued"}


@router.post(
    "/pacs/pull",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PullResult,
    responses={409: {"description": "no PACS configured"}, 502: {"description": "the PACS is unreachable"}},
)
async def pull(body: PullBody, svc: ServiceDep, _admin: Admin) -> dict:
    """Find studies on the PACS (QIDO-RS, mammography only), retrieve them (WADO-RS) and queue them."""
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


@router.get("/queue", response_model=Queue)
def queue(s: DbSession, svc: ServiceDep, _user: SignedIn) -> dict:
    """Studies per queue status and the state of the scoring worker."""
    return {"counts": queries.queue_counts(s), "worker": svc.worker_state}
