"""The HTTP API's request bodies and responses (pydantic models).

Every JSON endpoint declares its ``response_model`` from here, so ``/openapi.json`` documents
the API and FastAPI checks each answer against it. Fields that only some users get
(admin-only ones, the identifiers a reader-study case hides) are optional with no
default value set; the routes use ``response_model_exclude_unset=True``, so a field a
route leaves out stays out of the JSON rather than appearing as ``null``. Times are
ISO 8601 strings in UTC with a ``Z``; scores are probabilities rounded to 6 decimals.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from mammolens.serve.deps import MAX_DB_INT

Role = Literal["reader", "admin"]
StudyStatus = Literal["queued", "scoring", "scored", "failed"]
ReadingStatus = Literal["unread", "in_progress", "read"]
Phase = Literal["unaided", "aided", "done"]
_Id = Annotated[int, Field(ge=1, le=MAX_DB_INT)]

# --------------------------------------------------------------------------- requests


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    bearer: bool = Field(False, description="return a bearer token instead of setting the session cookie")


class StudyPatch(BaseModel):
    reading_status: ReadingStatus | None = None
    truth: Literal[0, 1] | None = Field(None, description="admin only: ground truth")
    clear_truth: bool = False


class PullBody(BaseModel):
    study_uid: str | None = Field(None, max_length=64, pattern=r"^[0-9.]+$")
    patient_id: str | None = Field(None, max_length=64)
    study_date: str | None = Field(None, max_length=17, pattern=r"^[0-9-]+$")
    limit: int = Field(20, ge=1, le=500)


class UnaidedBody(BaseModel):
    score: float = Field(ge=0, le=100, allow_inf_nan=False, description="probability of malignancy, 0-100")
    birads: int = Field(ge=0, le=6)


class AidedBody(UnaidedBody):
    heatmap_acceptable: bool | None = Field(None, description="is the heatmap clinically acceptable?")


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Role = "reader"


class UserPatch(BaseModel):
    active: bool | None = None
    role: Role | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)


class ReaderStudyBody(BaseModel):
    study_ids: list[_Id] = Field(min_length=1, max_length=10000)
    reader_ids: list[_Id] | None = Field(None, description="default: every active reader")
    seed: int | None = Field(None, description="random seed of the case orders")


# --------------------------------------------------------------------------- system


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    db: bool = Field(description="the database answered")
    worker: Literal["off", "running", "stopped"] = Field(description="scoring worker (off: no model)")
    version: str


# --------------------------------------------------------------------------- auth


class LoginResult(BaseModel):
    """A cookie login returns ``csrf_token``; a bearer login (``"bearer": true``) returns
    ``token``, ``token_type`` and ``expires_in`` instead."""

    username: str
    role: Role
    csrf_token: str | None = Field(None, description="cookie logins: send it as X-CSRF-Token with changes")
    token: str | None = Field(None, description="bearer logins: send it as 'Authorization: Bearer TOKEN'")
    token_type: Literal["bearer"] | None = None
    expires_in: int | None = Field(None, description="seconds the bearer token is valid")


class Me(BaseModel):
    id: int
    username: str
    role: Role
    csrf_token: str


class Ok(BaseModel):
    ok: bool


# --------------------------------------------------------------------------- studies


class _StudyFields(BaseModel):
    """The study fields every user sees (blinded reader-study cases included)."""

    id: int
    manufacturer: str
    source: Literal["upload", "dicomweb", "watch"]
    status: StudyStatus
    error: str = Field(description="why the last scoring attempt failed ('' when it did not)")
    exam_score: float | None = Field(description="exam-level AI score (null: not scored, or hidden)")
    flagged: bool = Field(description="exam_score at or above the operating point")
    reading_status: ReadingStatus
    n_images: int
    model: str = Field(description="name of the model that scored the study")
    pacs_status: str = Field(description="DICOM outputs: '', pending, writing, written, stored or failed")
    created_at: str
    scored_at: str | None
    in_reader_study: bool | None = Field(None, description="admins only")
    attempts: int | None = Field(None, description="admins only: scoring attempts used")


class _StudyIdentity(BaseModel):
    """Identifiers and the truth: absent from a reader-study case."""

    study_uid: str
    patient_id: str
    accession: str
    study_date: str = Field(description="YYYYMMDD as in the DICOM header ('' when absent)")
    truth: Literal[0, 1] | None = Field(None, description="admins only: ground truth (1 malignant)")


class StudyRow(_StudyIdentity, _StudyFields):
    """A study on the worklist."""


class Worklist(BaseModel):
    total: int = Field(description="studies matching the filters (all pages)")
    operating_point: float
    items: list[StudyRow]
    queue: dict[str, int] = Field(description="studies per status (all studies)")


class Region(BaseModel):
    """A high-scoring region of an image's heatmap (original pixel coordinates)."""

    rank: int = Field(description="1 = highest score")
    score: float
    x0: float
    y0: float
    x1: float
    y1: float
    peak_x: float
    peak_y: float


class ImageRow(BaseModel):
    id: int
    laterality: Literal["L", "R"]
    view: str = Field(description="CC, MLO, ML, ... ('' when the header has none)")
    rows: int
    columns: int
    score: float | None = Field(description="image-level AI score (null: not scored, or hidden)")
    breast_score: float | None
    has_heatmap: bool
    regions: list[Region] | None = Field(
        None, description="the highest-scoring heatmap regions (null while the AI is hidden)"
    )


class OutputRow(BaseModel):
    kind: str = Field(description="sr, sc, seg or pm")
    sop_instance_uid: str
    stored: bool = Field(description="stored to the PACS")


class BreastScores(BaseModel):
    R: float | None
    L: float | None


class Hanging(BaseModel):
    """Image ids of the four-view hanging protocol (null: no such image)."""

    RCC: int | None
    LCC: int | None
    RMLO: int | None
    LMLO: int | None


class _DetailFields(BaseModel):
    ai_visible: bool = Field(description="false while a reader's unaided read is not locked")
    operating_point: float
    breast_scores: BreastScores
    images: list[ImageRow]
    hanging: Hanging
    outputs: list[OutputRow] | None = Field(None, description="admins only: DICOM outputs written")


class StudyDetail(_DetailFields, _StudyIdentity, _StudyFields):
    """A study with its images, as the viewer opens it."""


class BlindedStudy(_DetailFields, _StudyFields):
    """A study as a reader-study case shows it: no identifiers, no truth."""


class Rejection(BaseModel):
    file: str
    reason: str


class IntakeResult(BaseModel):
    study_ids: list[int] = Field(description="studies created or given new images (queued for scoring)")
    stored: int = Field(description="new instances stored")
    duplicates: int = Field(description="instances already stored with identical bytes")
    conflicts: int = Field(description="refused: another object with a stored SOP Instance UID")
    rejected: list[Rejection]


class PullResult(BaseModel):
    found: int = Field(description="studies the PACS found")
    study_ids: list[int]
    stored: int
    duplicates: int
    rejected: list[Rejection]


class Deleted(BaseModel):
    deleted: int


class Requeued(BaseModel):
    id: int
    status: Literal["queued"]


class Queue(BaseModel):
    counts: dict[str, int] = Field(description="studies per status")
    worker: Literal["off", "running", "stopped"]


# --------------------------------------------------------------------------- images


class ImageInfo(BaseModel):
    """Display parameters of an image (display units: the model's input intensities, 0-1)."""

    id: int
    laterality: Literal["L", "R"]
    view: str
    window_center: float
    window_width: float
    min: float
    max: float
    mirrored: bool = Field(description="shown mirrored in the hanging protocol")
    voi: str = Field(description="the VOI transformation applied when decoding")
    rows: int
    columns: int


# --------------------------------------------------------------------------- reader study


class CaseItem(BaseModel):
    case_id: int
    position: int
    phase: Phase


class CaseProgress(BaseModel):
    cases: int
    unaided_done: int
    aided_done: int


class CaseList(BaseModel):
    items: list[CaseItem]
    progress: CaseProgress
    next_case_id: int | None = Field(description="first case not done (null: all done)")


class ReadOut(BaseModel):
    modality: Literal["unaided", "aided"]
    score: float = Field(description="probability of malignancy, 0-100")
    birads: int
    heatmap_acceptable: bool | None
    updated_at: str


class CaseReads(BaseModel):
    unaided: ReadOut | None
    aided: ReadOut | None


class Case(BaseModel):
    case_id: int
    position: int
    phase: Phase
    study: BlindedStudy
    reads: CaseReads


class CasePhase(BaseModel):
    case_id: int
    phase: Phase


class ReadSaved(CasePhase):
    read: ReadOut


# --------------------------------------------------------------------------- admin


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    active: bool
    created_at: str


class UserList(BaseModel):
    items: list[UserOut]


class ReaderStudySetup(BaseModel):
    readers: list[str] = Field(description="the readers given the studies")
    studies: int
    cases_added: int = Field(description="new cases over all readers (0 when every reader had them)")


class ReaderProgress(CaseProgress):
    reader: str


class ProgressList(BaseModel):
    items: list[ReaderProgress]


class ExportRow(BaseModel):
    reader: str
    case: str = Field(description="Study Instance UID")
    modality: Literal["unaided", "aided"]
    truth: Literal[0, 1] | None
    score: float
    birads: int
    heatmap_acceptable: Literal[0, 1, ""] = Field(description="1 yes, 0 no, '' not asked (unaided)")


class ReadsExport(BaseModel):
    columns: list[str]
    rows: list[ExportRow]
