"""``/api/admin``: accounts, reader-study set-up, progress and the reads export (admins only)."""

from __future__ import annotations

import csv
import io
import random
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from mammolens.errors import ConfigError
from mammolens.serve.auth import create_user, set_password
from mammolens.serve.deps import MAX_DB_INT, CurrentUser, RowId, require_admin, service
from mammolens.serve.models import Read, ReaderCase, Study, User

router = APIRouter(prefix="/api/admin", tags=["admin"])

#: columns of the export: what ``mammolens stats mrmc`` and ``evaluate --reads`` take
EXPORT_COLUMNS = ("reader", "case", "modality", "truth", "score", "birads", "heatmap_acceptable")


def _user_dict(u: User) -> dict:
    return {"id": u.id, "username": u.username, "role": u.role, "active": u.active,
            "created_at": u.created_at.isoformat() + "Z"}


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Literal["reader", "admin"] = "reader"


class UserPatch(BaseModel):
    active: bool | None = None
    role: Literal["reader", "admin"] | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)


@router.get("/users")
def list_users(request: Request, _a: CurrentUser = Depends(require_admin)) -> dict:
    with service(request).db.session() as s:
        return {"items": [_user_dict(u) for u in s.scalars(select(User).order_by(User.id)).all()]}


@router.post("/users", status_code=status.HTTP_201_CREATED)
def add_user(body: NewUser, request: Request, _a: CurrentUser = Depends(require_admin)) -> dict:
    with service(request).db.session() as s:
        try:
            u = create_user(s, body.username, body.password, role=body.role)
        except ConfigError as e:
            raise HTTPException(status.HTTP_409_CONFLICT if "exists" in str(e) else 422, str(e)) from None
        return _user_dict(u)


@router.patch("/users/{user_id}")
def patch_user(user_id: RowId, body: UserPatch, request: Request, admin: CurrentUser = Depends(require_admin)) -> dict:
    with service(request).db.session() as s:
        u = s.get(User, user_id)
        if u is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
        if u.id == admin.id and (body.active is False or body.role == "reader"):
            raise HTTPException(status.HTTP_409_CONFLICT, "admins cannot demote or deactivate themselves")
        if body.active is not None:
            u.active = body.active
            u.token_version += 1
        if body.role is not None:
            u.role = body.role
            u.token_version += 1
        if body.password is not None:
            set_password(s, u, body.password)
        return _user_dict(u)


_Id = Annotated[int, Field(ge=1, le=MAX_DB_INT)]


class ReaderStudyBody(BaseModel):
    study_ids: list[_Id] = Field(min_length=1, max_length=10000)
    reader_ids: list[_Id] | None = Field(None, description="default: every active reader")
    seed: int | None = Field(None, description="random seed of the case orders")


@router.post("/reader-study")
def setup_reader_study(body: ReaderStudyBody, request: Request, _a: CurrentUser = Depends(require_admin)) -> dict:
    """Add studies to the reader study and give each reader a randomised case list.

    Every study needs its ground truth (``PATCH /api/studies/{id}`` with ``truth``).
    Cases a reader already has are kept in place; new ones are appended in random order
    (independent per reader).
    """
    rng = random.Random(body.seed)
    with service(request).db.session() as s:
        studies = s.scalars(select(Study).where(Study.id.in_(body.study_ids))).all()
        missing = sorted(set(body.study_ids) - {st.id for st in studies})
        if missing:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no such studies: {missing}")
        no_truth = sorted(st.id for st in studies if st.truth is None)
        if no_truth:
            raise HTTPException(422, f"set the truth of studies {no_truth} first")
        q = select(User).where(User.role == "reader", User.active.is_(True))
        if body.reader_ids is not None:
            q = q.where(User.id.in_(body.reader_ids))
        readers = s.scalars(q.order_by(User.id)).all()
        if body.reader_ids is not None and len(readers) != len(set(body.reader_ids)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "some reader ids are not active readers")
        if not readers:
            raise HTTPException(422, "no active reader accounts")
        for st in studies:
            st.in_reader_study = True
        added = 0
        for r in readers:
            have = set(s.scalars(select(ReaderCase.study_id).where(ReaderCase.reader_id == r.id)).all())
            pos = s.scalar(select(func.max(ReaderCase.position)).where(ReaderCase.reader_id == r.id)) or 0
            new = [st.id for st in studies if st.id not in have]
            rng.shuffle(new)
            for sid in new:
                pos += 1
                s.add(ReaderCase(reader_id=r.id, study_id=sid, position=pos))
                added += 1
        return {"readers": [r.username for r in readers], "studies": len(studies), "cases_added": added}


@router.get("/reader-study/progress")
def progress(request: Request, _a: CurrentUser = Depends(require_admin)) -> dict:
    with service(request).db.session() as s:
        rows = s.execute(
            select(User.username, ReaderCase.phase, func.count(ReaderCase.id))
            .join(ReaderCase, ReaderCase.reader_id == User.id)
            .group_by(User.username, ReaderCase.phase)
        ).all()
    out: dict[str, dict] = {}
    for name, phase, n in rows:
        d = out.setdefault(name, {"reader": name, "cases": 0, "unaided_done": 0, "aided_done": 0})
        d["cases"] += n
        if phase in ("aided", "done"):
            d["unaided_done"] += n
        if phase == "done":
            d["aided_done"] += n
    return {"items": sorted(out.values(), key=lambda d: d["reader"])}


def export_rows(s) -> list[dict]:
    """Long-format reads: one row per (reader, case, modality) with the case's truth."""
    rows = s.execute(
        select(User.username, Study.study_uid, Read.modality, Study.truth, Read.score, Read.birads,
               Read.heatmap_acceptable)
        .join(ReaderCase, ReaderCase.id == Read.case_id)
        .join(User, User.id == ReaderCase.reader_id)
        .join(Study, Study.id == ReaderCase.study_id)
        .order_by(User.username, ReaderCase.position, Read.modality.desc())
    ).all()
    return [
        {
            "reader": u, "case": c, "modality": m, "truth": t, "score": sc, "birads": b,
            "heatmap_acceptable": "" if h is None else int(bool(h)),
        }
        for u, c, m, t, sc, b, h in rows
    ]


@router.get("/reader-study/export")
def export(
    request: Request,
    _a: CurrentUser = Depends(require_admin),
    fmt: Literal["csv", "json"] = Query("csv", alias="format"),
    complete_only: bool = Query(False, description="only cases read both unaided and aided"),
) -> Response:
    """The reads in long format (``reader, case, modality, truth, score, birads,
    heatmap_acceptable``), as ``mammolens stats mrmc`` and ``evaluate --reads`` take."""
    with service(request).db.session() as s:
        rows = export_rows(s)
    if complete_only:
        pairs: dict[tuple[str, str], set[str]] = {}
        for r in rows:
            pairs.setdefault((r["reader"], r["case"]), set()).add(r["modality"])
        rows = [r for r in rows if len(pairs[(r["reader"], r["case"])]) == 2]
    if fmt == "json":
        import json

        return Response(json.dumps({"columns": list(EXPORT_COLUMNS), "rows": rows}), media_type="application/json")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="reads.csv"'},
    )
