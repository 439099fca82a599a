"""JSON views of database rows, and the blinding rule of reader studies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammolens.serve.deps import CurrentUser
from mammolens.serve.models import Image, ReaderCase, Study

log = logging.getLogger("mammolens.serve")

#: regions listed per image in the study detail (the viewer's heatmap draws as many)
DEFAULT_REGIONS = 3

#: hanging protocol order: right/left CC on top, right/left MLO below (mirrored)
HANGING = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


def ai_visible(s: Session, user: CurrentUser, study: Study) -> bool:
    """Whether ``user`` may see the AI results of ``study``.

    Studies in a reader study are blinded for readers until their own unaided read of
    that case is locked (phase ``aided`` or ``done``); admins always see them.
    """
    if user.is_admin or not study.in_reader_study:
        return True
    phase = s.scalar(
        select(ReaderCase.phase).where(ReaderCase.reader_id == user.id, ReaderCase.study_id == study.id)
    )
    return phase in ("aided", "done")


def may_open(s: Session, user: CurrentUser, study: Study) -> bool:
    """Readers open reader-study studies only through their own case list."""
    if user.is_admin or not study.in_reader_study:
        return True
    return (
        s.scalar(
            select(ReaderCase.id).where(ReaderCase.reader_id == user.id, ReaderCase.study_id == study.id)
        )
        is not None
    )


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def study_row(st: Study, *, operating_point: float, n_images: int, admin: bool) -> dict:
    d = {
        "id": st.id,
        "study_uid": st.study_uid,
        "patient_id": st.patient_id,
        "accession": st.accession,
        "study_date": st.study_date,
        "manufacturer": st.manufacturer,
        "source": st.source,
        "status": st.status,
        "error": st.error,
        "exam_score": _r(st.exam_score),
        "flagged": bool(st.exam_score is not None and st.exam_score >= operating_point),
        "reading_status": st.reading_status,
        "n_images": n_images,
        "model": st.model,
        "pacs_status": st.pacs_status,
        "created_at": st.created_at.isoformat() + "Z",
        "scored_at": st.scored_at.isoformat() + "Z" if st.scored_at else None,
    }
    if admin:
        d |= {"truth": st.truth, "in_reader_study": st.in_reader_study, "attempts": st.attempts}
    return d


def image_regions(im: Image, heatmap_path: Callable[[str], Path] | None, k: int) -> list[dict]:
    """The ``k`` highest-scoring regions of ``im``'s heatmap (original pixel coordinates:
    ``rank, score, x0, y0, x1, y1, peak_x, peak_y``), the boxes ``predict`` writes to
    ``PREDICTIONS_regions.csv`` and the viewer's heatmap outlines; ``[]`` without a
    heatmap or when its file cannot be read (logged, the study still opens)."""
    if heatmap_path is None or not im.heatmap_file or k <= 0:
        return []
    from mammolens.data.heatmap_io import heatmap_regions

    try:
        return heatmap_regions(heatmap_path(im.heatmap_file), k)
    except (OSError, ValueError, KeyError) as e:
        log.warning("image #%s: heatmap regions unavailable (%s)", im.id, type(e).__name__)
        return []


def image_row(
    im: Image, *, show_ai: bool, heatmap_path: Callable[[str], Path] | None = None, regions: int = DEFAULT_REGIONS
) -> dict:
    return {
        "id": im.id,
        "laterality": im.laterality,
        "view": im.view,
        "rows": im.rows,
        "columns": im.columns,
        "score": _r(im.score) if show_ai else None,
        "breast_score": _r(im.breast_score) if show_ai else None,
        "has_heatmap": bool(im.heatmap_file) and show_ai,
        "regions": image_regions(im, heatmap_path, regions) if show_ai else None,
    }


def study_detail(
    s: Session,
    st: Study,
    user: CurrentUser,
    *,
    operating_point: float,
    heatmap_path: Callable[[str], Path] | None = None,
    regions: int = DEFAULT_REGIONS,
) -> dict:
    """A study with its images; ``heatmap_path`` (stored heatmap name -> file) lets each
    image list its ``regions`` top-scoring regions (``[]`` without it)."""
    show = ai_visible(s, user, st)
    imgs = list(st.images)
    d = study_row(st, operating_point=operating_point, n_images=len(imgs), admin=user.is_admin)
    if not show:
        d["exam_score"] = None
        d["flagged"] = False
    breasts: dict[str, float | None] = {"R": None, "L": None}
    for im in imgs:
        if show and im.breast_score is not None and im.laterality in breasts:
            cur = breasts[im.laterality]
            breasts[im.laterality] = max(cur, im.breast_score) if cur is not None else im.breast_score
    hanging: dict[str, int | None] = {}
    for lat, view in HANGING:
        match = next((im.id for im in imgs if im.laterality == lat and im.view == view), None)
        hanging[f"{lat}{view}"] = match
    d |= {
        "ai_visible": show,
        "operating_point": operating_point,
        "breast_scores": {k: _r(v) for k, v in breasts.items()},
        "images": [image_row(im, show_ai=show, heatmap_path=heatmap_path, regions=regions) for im in imgs],
        "hanging": hanging,
    }
    if user.is_admin:
        d["outputs"] = [
            {"kind": o.kind, "sop_instance_uid": o.sop_instance_uid, "stored": o.stored}
            for o in st.outputs
        ]
    return d
