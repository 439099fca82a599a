"""``/api/reader``: reader-study mode for the signed-in reader (own cases and reads only).

Each case is read first without AI (``unaided``: probability of malignancy 0-100 and
BI-RADS 0-6), then, after ``start-aided`` locks the unaided read, with the AI score and
heatmap shown (``aided``, plus whether the heatmap is clinically acceptable). A reader
only ever sees their own case list and reads; another reader's case is a 404.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, HTTPException, status
from sqlalchemy.orm import Session

from mammolens.serve import queries
from mammolens.serve.deps import CurrentUser, DbSession, RowId, ServiceDep, SignedIn
from mammolens.serve.models import ReaderCase
from mammolens.serve.routes._views import case_study, read_row
from mammolens.serve.schemas import AidedBody, Case, CaseList, CasePhase, ReadSaved, UnaidedBody

router = APIRouter(prefix="/api/reader", tags=["reader study"])


def _own_case(s: Session, case_id: int, user: CurrentUser) -> ReaderCase:
    case = queries.own_case(s, case_id, user.id)
    if case is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such case")
    return case


@router.get("/cases", response_model=CaseList)
def my_cases(s: DbSession, user: SignedIn) -> dict:
    """The reader's randomised case list (in reading order) and progress."""
    items = [{"case_id": c.id, "position": c.position, "phase": c.phase} for c in queries.reader_cases(s, user.id)]
    done = sum(1 for c in items if c["phase"] == "done")
    unaided = sum(1 for c in items if c["phase"] in ("aided", "done"))
    nxt = next((c["case_id"] for c in items if c["phase"] != "done"), None)
    return {
        "items": items,
        "progress": {"cases": len(items), "unaided_done": unaided, "aided_done": done},
        "next_case_id": nxt,
    }


@router.get("/cases/{case_id}", response_model=Case, response_model_exclude_unset=True)
def get_case(case_id: RowId, s: DbSession, svc: ServiceDep, user: SignedIn) -> dict:
    """A case: its images, phase and the reader's reads; AI results only once aided.
    The case view never exposes identifiers or the truth."""
    case = _own_case(s, case_id, user)
    study = case_study(
        case.study, user, show_ai=queries.ai_visible(s, user, case.study),
        operating_point=svc.settings.operating_point,
        heatmap_path=functools.partial(svc.storage.resolve, "heatmaps"),
    )
    reads = queries.case_reads(s, case.id)
    return {
        "case_id": case.id,
        "position": case.position,
        "phase": case.phase,
        "study": study,
        "reads": {m: read_row(reads.get(m)) for m in ("unaided", "aided")},
    }


@router.put("/cases/{case_id}/unaided", response_model=ReadSaved)
def put_unaided(case_id: RowId, body: UnaidedBody, s: DbSession, user: SignedIn) -> dict:
    """Save (or correct) the unaided read; 409 once it is locked."""
    case = _own_case(s, case_id, user)
    if case.phase != "unaided":
        raise HTTPException(status.HTTP_409_CONFLICT, "the unaided read is locked (aided read started)")
    r = queries.save_read(s, case, "unaided", score=body.score, birads=body.birads)
    return {"case_id": case.id, "phase": case.phase, "read": read_row(r)}


@router.post("/cases/{case_id}/start-aided", response_model=CasePhase)
def start_aided(case_id: RowId, s: DbSession, user: SignedIn) -> dict:
    """Lock the unaided read and reveal the AI results for this case."""
    case = _own_case(s, case_id, user)
    if case.phase == "unaided":
        if "unaided" not in queries.case_reads(s, case.id):
            raise HTTPException(status.HTTP_409_CONFLICT, "submit the unaided read first")
        if case.study.status != "scored":
            raise HTTPException(status.HTTP_409_CONFLICT, "the AI has not scored this study yet")
        queries.set_phase(case, "aided")
    return {"case_id": case.id, "phase": case.phase}


@router.put("/cases/{case_id}/aided", response_model=ReadSaved)
def put_aided(case_id: RowId, body: AidedBody, s: DbSession, user: SignedIn) -> dict:
    """Save the aided read (once); the case is then done."""
    case = _own_case(s, case_id, user)
    if case.phase == "unaided":
        raise HTTPException(status.HTTP_409_CONFLICT, "start the aided read first (locks the unaided read)")
    if case.phase == "done":
        raise HTTPException(status.HTTP_409_CONFLICT, "this case is complete")
    r = queries.save_read(
        s, case, "aided", score=body.score, birads=body.birads, heatmap_acceptable=body.heatmap_acceptable
    )
    queries.set_phase(case, "done")
    return {"case_id": case.id, "phase": case.phase, "read": read_row(r)}
