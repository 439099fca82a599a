"""``/api/reader``: reader-study mode for the signed-in reader (own cases and reads only).

Each case is read first without AI (``unaided``: probability of malignancy 0-100 and
BI-RADS 0-6), then, after ``start-aided`` locks the unaided read, with the AI score and
heatmap shown (``aided``, plus whether the heatmap is clinically acceptable). A reader
only ever sees their own case list and reads; another reader's case is a 404.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from mammolens.serve.deps import CurrentUser, RowId, current_user, service
from mammolens.serve.models import Read, ReaderCase, utcnow
from mammolens.serve.routes._views import study_detail

router = APIRouter(prefix="/api/reader", tags=["reader study"])


class UnaidedBody(BaseModel):
    score: float = Field(ge=0, le=100, allow_inf_nan=False, description="probability of malignancy, 0-100")
    birads: int = Field(ge=0, le=6)


class AidedBody(UnaidedBody):
    heatmap_acceptable: bool | None = Field(None, description="is the heatmap clinically acceptable?")


def _read_dict(r: Read | None) -> dict | None:
    if r is None:
        return None
    return {
        "modality": r.modality,
        "score": r.score,
        "birads": r.birads,
        "heatmap_acceptable": r.heatmap_acceptable,
        "updated_at": r.updated_at.isoformat() + "Z",
    }


def _reads(s, case_id: int) -> dict[str, Read]:
    return {r.modality: r for r in s.scalars(select(Read).where(Read.case_id == case_id)).all()}


def _own_case(s, case_id: int, user: CurrentUser) -> ReaderCase:
    case = s.get(ReaderCase, case_id)
    if case is None or case.reader_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such case")
    return case


@router.get("/cases")
def my_cases(request: Request, user: CurrentUser = Depends(current_user)) -> dict:
    """The reader's randomised case list (in reading order) and progress."""
    svc = service(request)
    with svc.db.session() as s:
        cases = s.scalars(
            select(ReaderCase).where(ReaderCase.reader_id == user.id).order_by(ReaderCase.position)
        ).all()
        items = [{"case_id": c.id, "position": c.position, "phase": c.phase} for c in cases]
    done = sum(1 for c in items if c["phase"] == "done")
    unaided = sum(1 for c in items if c["phase"] in ("aided", "done"))
    nxt = next((c["case_id"] for c in items if c["phase"] != "done"), None)
    return {
        "items": items,
        "progress": {"cases": len(items), "unaided_done": unaided, "aided_done": done},
        "next_case_id": nxt,
    }


@router.get("/cases/{case_id}")
def get_case(case_id: RowId, request: Request, user: CurrentUser = Depends(current_user)) -> dict:
    """A case: its images, phase and the reader's reads; AI results only once aided."""
    svc = service(request)
    with svc.db.session() as s:
        case = _own_case(s, case_id, user)
        study = study_detail(
            s, case.study, user, operating_point=svc.settings.operating_point,
            heatmap_path=functools.partial(svc.storage.resolve, "heatmaps"),
        )
        # the case view never exposes identifiers or the truth
        for k in ("patient_id", "accession", "study_uid", "truth", "study_date"):
            study.pop(k, None)
        reads = _reads(s, case.id)
        return {
            "case_id": case.id,
            "position": case.position,
            "phase": case.phase,
            "study": study,
            "reads": {m: _read_dict(reads.get(m)) for m in ("unaided", "aided")},
        }


@router.put("/cases/{case_id}/unaided")
def put_unaided(
    case_id: RowId, body: UnaidedBody, request: Request, user: CurrentUser = Depends(current_user)
) -> dict:
    svc = service(request)
    with svc.db.session() as s:
        case = _own_case(s, case_id, user)
        if case.phase != "unaided":
            raise HTTPException(status.HTTP_409_CONFLICT, "the unaided read is locked (aided read started)")
        r = _reads(s, case.id).get("unaided")
        if r is None:
            r = Read(case_id=case.id, modality="unaided", score=body.score, birads=body.birads)
            s.add(r)
        r.score, r.birads, r.updated_at = float(body.score), int(body.birads), utcnow()
        s.flush()
        return {"case_id": case.id, "phase": case.phase, "read": _read_dict(r)}


@router.post("/cases/{case_id}/start-aided")
def start_aided(case_id: RowId, request: Request, user: CurrentUser = Depends(current_user)) -> dict:
    """Lock the unaided read and reveal the AI results for this case."""
    svc = service(request)
    with svc.db.session() as s:
        case = _own_case(s, case_id, user)
        if case.phase == "unaided":
            if "unaided" not in _reads(s, case.id):
                raise HTTPException(status.HTTP_409_CONFLICT, "submit the unaided read first")
            if case.study.status != "scored":
                raise HTTPException(status.HTTP_409_CONFLICT, "the AI has not scored this study yet")
            case.phase = "aided"
        return {"case_id": case.id, "phase": case.phase}


@router.put("/cases/{case_id}/aided")
def put_aided(
    case_id: RowId, body: AidedBody, request: Request, user: CurrentUser = Depends(current_user)
) -> dict:
    svc = service(request)
    with svc.db.session() as s:
        case = _own_case(s, case_id, user)
        if case.phase == "unaided":
            raise HTTPException(status.HTTP_409_CONFLICT, "start the aided read first (locks the unaided read)")
        if case.phase == "done":
            raise HTTPException(status.HTTP_409_CONFLICT, "this case is complete")
        r = Read(
            case_id=case.id,
            modality="aided",
            score=float(body.score),
            birads=int(body.birads),
            heatmap_acceptable=body.heatmap_acceptable,
        )
        s.add(r)
        case.phase = "done"
        s.flush()
        return {"case_id": case.id, "phase": case.phase, "read": _read_dict(r)}
