"""The service's database queries: every SQL statement mammolens runs on the service
database (``select``, ``update``, ``delete``) is built and executed by a function here.

The routes (``serve/routes``) decide what HTTP answers, the background queues
(``worker.py``, ``outputs.py``), the intake (``intake.py``), the accounts (``auth.py``)
and the ``mammolens users`` command decide what happens and when; this module decides
what SQL runs. Functions take an open :class:`~sqlalchemy.orm.Session` (the request's,
from :func:`mammolens.serve.deps.db_session`, or the caller's ``with db.session()``)
and return ORM rows or plain values; they never commit (the session's owner does, so a
claim and the change it guards stay one transaction) and never raise HTTP errors
(``None`` means "not there, or not for this user", which the route turns into a 404).
Callers still load rows by primary key (``s.get``), add, delete and change ORM objects
in their own sessions: that is the unit of work, not a query.

The reader-study blinding rule lives here too (:func:`ai_visible`, :func:`may_open`),
since it is a query on the reader's case list.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session, selectinload

from mammolens.serve.models import AuthSession, Image, Read, ReaderCase, Study, User, utcnow

if TYPE_CHECKING:  # auth.py queries through this module: only its types here
    from mammolens.serve.auth import CurrentUser, SessionInfo

# --------------------------------------------------------------------------- health


def ping(s: Session) -> None:
    """A round trip to the database (raises when it is unreachable)."""
    s.execute(text("SELECT 1"))


# --------------------------------------------------------------------------- accounts


def signed_in_user(s: Session, info: SessionInfo) -> User | None:
    """The account a verified session token names, while the token is still good: the
    account is active, its ``token_version`` matches and the session row is open."""
    user = s.get(User, info.user_id)
    if user is None or not user.active or user.token_version != info.version:
        return None
    if not session_active(s, info):  # logged out, expired or unknown session
        return None
    return user


def session_active(s: Session, info: SessionInfo) -> bool:
    """Whether the session ``info`` names is on record, not revoked and not expired."""
    row = s.get(AuthSession, info.sid)
    return (
        row is not None
        and row.user_id == info.user_id
        and row.revoked_at is None
        and row.expires_at > utcnow()
    )


def purge_ended_sessions(s: Session, before: datetime) -> None:
    """Delete the session rows that expired before ``before`` (in bulk: the ORM objects
    of the session are not synchronised, none of them is loaded)."""
    s.execute(
        delete(AuthSession).where(AuthSession.expires_at < before),
        execution_options={"synchronize_session": False},
    )


def get_user(s: Session, user_id: int) -> User | None:
    return s.get(User, user_id)


def user_by_name(s: Session, username: str) -> User | None:
    """The account named ``username`` (active or not)."""
    return s.scalar(select(User).where(User.username == username))


def list_users(s: Session) -> Sequence[User]:
    return s.scalars(select(User).order_by(User.id)).all()


def update_user(s: Session, user: User, *, active: bool | None, role: str | None) -> None:
    """Change an account; a change of ``active`` or ``role`` ends its issued sessions."""
    if active is not None:
        user.active = active
        user.token_version += 1
    if role is not None:
        user.role = role
        user.token_version += 1


# --------------------------------------------------------------------------- blinding


def _reader_case(s: Session, user: CurrentUser, study: Study):
    return s.execute(
        select(ReaderCase.id, ReaderCase.phase).where(
            ReaderCase.reader_id == user.id, ReaderCase.study_id == study.id
        )
    ).first()


def ai_visible(s: Session, user: CurrentUser, study: Study) -> bool:
    """Whether ``user`` may see the AI results of ``study``.

    Studies in a reader study are blinded for readers until their own unaided read of
    that case is locked (phase ``aided`` or ``done``); admins always see them.
    """
    if user.is_admin or not study.in_reader_study:
        return True
    case = _reader_case(s, user, study)
    return case is not None and case.phase in ("aided", "done")


def may_open(s: Session, user: CurrentUser, study: Study) -> bool:
    """Readers open reader-study studies only through their own case list."""
    if user.is_admin or not study.in_reader_study:
        return True
    return _reader_case(s, user, study) is not None


# --------------------------------------------------------------------------- studies


@dataclass(frozen=True)
class WorklistPage:
    """One page of the worklist, read in one snapshot (the numbers agree)."""

    total: int
    rows: list[tuple[Study, int]]  # (study, number of images)
    queue: dict[str, int]


def worklist(
    s: Session,
    *,
    admin: bool,
    operating_point: float,
    status: str | None = None,
    reading_status: str | None = None,
    source: str | None = None,
    flagged: bool | None = None,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> WorklistPage:
    """The worklist: highest exam-level AI score first (triage), unscored studies last.

    Readers (``admin=False``) do not see studies that are part of a reader study (they
    are blinded cases). ``q`` is a prefix of the patient ID or the accession number.
    """
    cond = []
    if not admin:
        cond.append(Study.in_reader_study.is_(False))
    if status:
        cond.append(Study.status == status)
    if reading_status:
        cond.append(Study.reading_status == reading_status)
    if source:
        cond.append(Study.source == source)
    if flagged is True:
        cond.append(Study.exam_score >= operating_point)
    elif flagged is False:
        cond.append((Study.exam_score < operating_point) | Study.exam_score.is_(None))
    if q:
        like = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cond.append(Study.patient_id.like(like, escape="\\") | Study.accession.like(like, escape="\\"))
    n_img = select(Image.study_id, func.count(Image.id).label("n")).group_by(Image.study_id).subquery()
    total = s.scalar(select(func.count(Study.id)).where(*cond))
    rows = s.execute(
        select(Study, func.coalesce(n_img.c.n, 0))
        .outerjoin(n_img, n_img.c.study_id == Study.id)
        .where(*cond)
        .order_by(Study.exam_score.is_(None), Study.exam_score.desc(), Study.created_at, Study.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return WorklistPage(int(total or 0), [(st, int(n)) for st, n in rows], queue_counts(s))


def queue_counts(s: Session) -> dict[str, int]:
    """Number of studies per queue status."""
    return {k: int(n) for k, n in s.execute(select(Study.status, func.count(Study.id)).group_by(Study.status)).all()}


def get_study(s: Session, study_id: int) -> Study | None:
    """A study with its images and DICOM outputs loaded."""
    return s.scalar(
        select(Study)
        .where(Study.id == study_id)
        .options(selectinload(Study.images), selectinload(Study.outputs))
    )


def viewable_study(s: Session, study_id: int, user: CurrentUser) -> Study | None:
    """The study, if it exists and ``user`` may open it (see :func:`may_open`)."""
    st = get_study(s, study_id)
    return st if st is not None and may_open(s, user, st) else None


def update_study(
    st: Study, *, reading_status: str | None = None, truth: int | None = None, clear_truth: bool = False
) -> None:
    if reading_status is not None:
        st.reading_status = reading_status
    if truth is not None:
        st.truth = int(truth)
    if clear_truth:
        st.truth = None
    st.updated_at = utcnow()


def delete_study(s: Session, st: Study) -> list[tuple[str, str]]:
    """Delete the study's rows (images, outputs, cases, reads cascade); returns the stored
    files it leaves as ``(storage kind, name)``, to remove once the deletion is committed."""
    files = (
        [("instances", im.file) for im in st.images]
        + [("heatmaps", im.heatmap_file) for im in st.images if im.heatmap_file]
        + [("outputs", o.file) for o in st.outputs]
    )
    s.delete(st)
    return files


def requeue_study(st: Study) -> None:
    """Queue a study for scoring again, with a fresh count of attempts."""
    st.status, st.attempts, st.error, st.updated_at = "queued", 0, "", utcnow()


def studies_by_id(s: Session, ids: Sequence[int]) -> Sequence[Study]:
    return s.scalars(select(Study).where(Study.id.in_(ids))).all()


def study_by_uid(s: Session, study_uid: str) -> Study | None:
    """The study with DICOM Study Instance UID ``study_uid``."""
    return s.scalar(select(Study).where(Study.study_uid == study_uid))


# --------------------------------------------------------------------------- images


def study_images(s: Session, study_id: int) -> Sequence[Image]:
    """The study's images, in the order they were stored (by id)."""
    return s.scalars(select(Image).where(Image.study_id == study_id).order_by(Image.id)).all()


def study_image_uids(s: Session, study_id: int) -> set[str]:
    """SOP Instance UIDs of the study's images."""
    return set(s.scalars(select(Image.sop_instance_uid).where(Image.study_id == study_id)).all())


def image_uids_in_other_studies(s: Session, uids: Iterable[str], study_uid: str) -> set[str]:
    """Those of ``uids`` that are SOP Instance UIDs of images of a study other than
    ``study_uid`` (an instance belongs to one study)."""
    return set(
        s.scalars(
            select(Image.sop_instance_uid)
            .join(Study, Study.id == Image.study_id)
            .where(Image.sop_instance_uid.in_(list(uids)), Study.study_uid != study_uid)
        ).all()
    )


def viewable_image(s: Session, image_id: int, user: CurrentUser) -> tuple[Image, bool] | None:
    """The image (detached from the session, for use after it ends) and whether
    ``user`` may see its AI results; ``None`` when it does not exist or ``user`` may not
    open its study."""
    im = s.get(Image, image_id)
    if im is None or not may_open(s, user, im.study):
        return None
    show_ai = ai_visible(s, user, im.study)
    s.expunge(im)
    return im, show_ai


# --------------------------------------------------------------------------- scoring queue
#
# The queue is the ``studies`` table itself (worker.py): ``status`` queued -> scoring ->
# scored | failed, and for the DICOM outputs ``pacs_status`` pending -> writing ->
# written | stored | failed. A claim is a conditional ``UPDATE ... WHERE <still in the
# state read>``: of several workers (threads, processes, on SQLite or PostgreSQL) that
# read the same candidate, exactly one updates a row; the others see a row count of 0
# and look again.


def reset_interrupted(s: Session, *, max_attempts: int) -> int:
    """Studies left in ``scoring`` back to ``queued``, or ``failed`` (with the reason)
    once they have used up ``max_attempts``; DICOM outputs left in ``writing`` back to
    ``pending``, or ``failed`` likewise. Returns the number of studies re-queued."""
    now = utcnow()
    s.execute(
        update(Study)
        .where(Study.status.in_(("scoring", "queued")), Study.attempts >= max_attempts)
        .values(
            status="failed",
            error=f"scoring was interrupted {max_attempts} times (the scoring process died or the "
            "server stopped while scoring this study); not retried",
            updated_at=now,
        )
    )
    res = s.execute(update(Study).where(Study.status == "scoring").values(status="queued", updated_at=now))
    s.execute(
        update(Study)
        .where(Study.pacs_status == "writing", Study.output_attempts >= max_attempts)
        .values(pacs_status="failed")
    )
    s.execute(update(Study).where(Study.pacs_status == "writing").values(pacs_status="pending"))
    return int(res.rowcount or 0)


def next_queued_study(s: Session, *, max_attempts: int | None = None) -> int | None:
    """The id of the study queued longest (with ``max_attempts``: among those with
    attempts left), or ``None``; a candidate for :func:`claim_study`."""
    q = select(Study.id).where(Study.status == "queued")
    if max_attempts is not None:
        q = q.where(Study.attempts < max_attempts)
    return s.scalar(q.order_by(Study.updated_at, Study.id).limit(1))


def claim_study(s: Session, study_id: int) -> bool:
    """Move the study from ``queued`` to ``scoring`` and count an attempt, if it is still
    queued; ``False`` when another worker took it first."""
    res = s.execute(
        update(Study)
        .where(Study.id == study_id, Study.status == "queued")
        .values(status="scoring", attempts=Study.attempts + 1, updated_at=utcnow())
    )
    return res.rowcount == 1


def next_pending_outputs(s: Session, study_id: int | None = None) -> int | None:
    """The id of the scored study whose DICOM outputs have waited longest (``study_id``:
    that one, if pending), or ``None``; a candidate for :func:`claim_study_outputs`."""
    q = select(Study.id).where(Study.status == "scored", Study.pacs_status == "pending")
    if study_id is not None:
        q = q.where(Study.id == study_id)
    return s.scalar(q.order_by(Study.updated_at, Study.id).limit(1))


def claim_study_outputs(s: Session, study_id: int) -> bool:
    """Move the study's DICOM outputs from ``pending`` to ``writing`` and count an
    attempt, if they are still pending; ``False`` when another worker took them first."""
    res = s.execute(
        update(Study)
        .where(Study.id == study_id, Study.status == "scored", Study.pacs_status == "pending")
        .values(pacs_status="writing", output_attempts=Study.output_attempts + 1)
    )
    return res.rowcount == 1


def release_outputs(s: Session, study_id: int) -> None:
    """Clear the claim of outputs that turned out to have nothing to write (``writing``
    -> ``""``); a claim that has since changed hands is left alone."""
    s.execute(update(Study).where(Study.id == study_id, Study.pacs_status == "writing").values(pacs_status=""))


def scoring_busy(s: Session) -> bool:
    """Whether any study is queued or being scored."""
    return s.scalar(select(Study.id).where(Study.status.in_(("queued", "scoring"))).limit(1)) is not None


# --------------------------------------------------------------------------- reader study


def reader_cases(s: Session, reader_id: int) -> Sequence[ReaderCase]:
    """The reader's case list in reading order."""
    return s.scalars(
        select(ReaderCase).where(ReaderCase.reader_id == reader_id).order_by(ReaderCase.position)
    ).all()


def own_case(s: Session, case_id: int, reader_id: int) -> ReaderCase | None:
    """The case, if it belongs to ``reader_id`` (another reader's case does not exist)."""
    case = s.scalar(
        select(ReaderCase)
        .where(ReaderCase.id == case_id)
        .options(selectinload(ReaderCase.study).selectinload(Study.images))
    )
    return case if case is not None and case.reader_id == reader_id else None


def case_reads(s: Session, case_id: int) -> dict[str, Read]:
    """The case's reads by modality (``unaided``, ``aided``)."""
    return {r.modality: r for r in s.scalars(select(Read).where(Read.case_id == case_id)).all()}


def save_read(
    s: Session, case: ReaderCase, modality: str, *, score: float, birads: int,
    heatmap_acceptable: bool | None = None,
) -> Read:
    """Create or replace the case's ``modality`` read."""
    r = case_reads(s, case.id).get(modality)
    if r is None:
        r = Read(case_id=case.id, modality=modality, score=float(score), birads=int(birads))
        s.add(r)
    r.score, r.birads, r.heatmap_acceptable, r.updated_at = float(score), int(birads), heatmap_acceptable, utcnow()
    s.flush()
    return r


def set_phase(case: ReaderCase, phase: str) -> None:
    """Move a case on: ``aided`` locks the unaided read, ``done`` ends the case."""
    case.phase = phase


def active_readers(s: Session, reader_ids: Sequence[int] | None = None) -> Sequence[User]:
    """Active reader accounts (all, or those of ``reader_ids``), by id."""
    q = select(User).where(User.role == "reader", User.active.is_(True))
    if reader_ids is not None:
        q = q.where(User.id.in_(reader_ids))
    return s.scalars(q.order_by(User.id)).all()


def add_cases(s: Session, readers: Sequence[User], studies: Sequence[Study], rng: random.Random) -> int:
    """Put ``studies`` in the reader study and append the ones each reader lacks to their
    case list, in an order of their own; returns the number of cases added."""
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
    return added


def reader_progress(s: Session) -> list[tuple[str, str, int]]:
    """``(reader, phase, number of cases)`` rows."""
    rows = s.execute(
        select(User.username, ReaderCase.phase, func.count(ReaderCase.id))
        .join(ReaderCase, ReaderCase.reader_id == User.id)
        .group_by(User.username, ReaderCase.phase)
    ).all()
    return [(u, p, int(n)) for u, p, n in rows]


def export_reads(s: Session) -> list[tuple]:
    """Every read: ``(reader, study UID, modality, truth, score, BI-RADS, heatmap
    acceptable)``, by reader, case position, unaided before aided."""
    return [
        tuple(r)
        for r in s.execute(
            select(User.username, Study.study_uid, Read.modality, Study.truth, Read.score, Read.birads,
                   Read.heatmap_acceptable)
            .join(ReaderCase, ReaderCase.id == Read.case_id)
            .join(User, User.id == ReaderCase.reader_id)
            .join(Study, Study.id == ReaderCase.study_id)
            .order_by(User.username, ReaderCase.position, Read.modality.desc())
        ).all()
    ]
