"""``/api/admin``: accounts, reader-study set-up, progress and the reads export (admins only)."""

from __future__ import annotations

import csv
import io
import json
import random
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response

from mammolens.errors import ConfigError
from mammolens.serve import queries
from mammolens.serve.auth import create_user, set_password
from mammolens.serve.deps import Admin, DbSession, RowId
from mammolens.serve.models import User
from mammolens.serve.schemas import (
    NewUser,
    ProgressList,
    ReaderStudyBody,
    ReaderStudySetup,
    ReadsExport,
    UserList,
    UserOut,
    UserPatch,
)

router = APIRouter(prefix="/api/admin", tags=["admin"])

#: columns of the export: what ``mammolens stats mrmc`` and ``evaluate --reads`` take
EXPORT_COLUMNS = ("reader", "case", "modality", "truth", "score", "birads", "heatmap_acceptable")


def _user_dict(u: User) -> dict:
    return {"id": u.id, "username": u.username, "role": u.role, "active": u.active,
            "created_at": u.created_at.isoformat() + "Z"}


@router.get("/users", response_model=UserList)
def list_users(s: DbSession, _a: Admin) -> dict:
    return {"items": [_user_dict(u) for u in queries.list_users(s)]}


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut)
def add_user(body: NewUser, s: DbSession, _a: Admin) -> dict:
    try:
        u = create_user(s, body.username, body.password, role=body.role)
    except ConfigError as e:
        raise HTTPException(status.HTTP_409_CONFLICT if "exists" in str(e) else 422, str(e)) from None
    return _user_dict(u)


@router.patch("/users/{user_id}", response_model=UserOut)
def patch_user(user_id: RowId, body: UserPatch, s: DbSession, admin: Admin) -> dict:
    """Activate or deactivate an account, change its role or password (each ends its sessions)."""
    u = queries.get_user(s, user_id)
    if u is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
    if u.id == admin.id and (body.active is False or body.role == "reader"):
        raise HTTPException(status.HTTP_409_CONFLICT, "admins cannot demote or deactivate themselves")
    queries.update_user(s, u, active=body.active, role=body.role)
    if body.password is not None:
        set_password(s, u, body.password)
    return _user_dict(u)


@router.post("/reader-study", response_model=ReaderStudySetup)
def setup_reader_study(body: ReaderStudyBody, s: DbSession, _a: Admin) -> dict:
    """Add studies to the reader study and give each reader a randomised case list.

    Every study needs its ground truth (``PATCH /api/studies/{id}`` with ``truth``).
    Cases a reader already has are kept in place; new ones are appended in random order
    (independent per reader).
    """
    studies = queries.studies_by_id(s, body.study_ids)
    missing = sorted(set(body.study_ids) - {st.id for st in studies})
    if missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no such studies: {missing}")
    no_truth = sorted(st.id for st in studies if st.truth is None)
    if no_truth:
        raise HTTPException(422, f"set the truth of studies {no_truth} first")
    readers = queries.active_readers(s, body.reader_ids)
    if body.reader_ids is not None and len(readers) != len(set(body.reader_ids)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "some reader ids are not active readers")
    if not readers:
        raise HTTPException(422, "no active reader accounts")
    added = queries.add_cases(s, readers, studies, random.Random(body.seed))
    return {"readers": [r.username for r in readers], "studies": len(studies), "cases_added": added}


@router.get("/reader-study/progress", response_model=ProgressList)
def progress(s: DbSession, _a: Admin) -> dict:
    out: dict[str, dict] = {}
    for name, phase, n in queries.reader_progress(s):
        d = out.setdefault(name, {"reader": name, "cases": 0, "unaided_done": 0, "aided_done": 0})
        d["cases"] += n
        if phase in ("aided", "done"):
            d["unaided_done"] += n
        if phase == "done":
            d["aided_done"] += n
    return {"items": sorted(out.values(), key=lambda d: d["reader"])}


def export_rows(s) -> list[dict]:
    """Long-format reads: one row per (reader, case, modality) with the case's truth."""
    return [
        {
            "reader": u, "case": c, "modality": m, "truth": t, "score": sc, "birads": b,
            "heatmap_acceptable": "" if h is None else int(bool(h)),
        }
        for u, c, m, t, sc, b, h in queries.export_reads(s)
    ]


@router.get(
    "/reader-study/export",
    response_class=Response,
    responses={
        200: {
            "description": "The reads: CSV (default) or JSON (`format=json`).",
            "model": ReadsExport,  # the JSON form
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
def export(
    s: DbSession,
    _a: Admin,
    fmt: Literal["csv", "json"] = Query("csv", alias="format"),
    complete_only: bool = Query(False, description="only cases read both unaided and aided"),
) -> Response:
    """The reads in long format (``reader, case, modality, truth, score, birads,
    heatmap_acceptable``), as ``mammolens stats mrmc`` and ``evaluate --reads`` take."""
    rows = export_rows(s)
    if complete_only:
        pairs: dict[tuple[str, str], set[str]] = {}
        for r in rows:
            pairs.setdefault((r["reader"], r["case"]), set()).add(r["modality"])
        rows = [r for r in rows if len(pairs[(r["reader"], r["case"])]) == 2]
    if fmt == "json":
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

