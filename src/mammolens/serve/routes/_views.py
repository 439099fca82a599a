"""JSON views of database rows: the dicts the routes return, validated and documented by
the response models of :mod:`mammolens.serve.schemas`. Pure functions of loaded rows: the
rows, and whether the user may see the AI results (the blinding rule,
:func:`mammolens.serve.queries.ai_visible`), come from :mod:`mammolens.serve.queries`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from mammolens.serve.auth import CurrentUser
from mammolens.serve.models import Image, Read, Study

log = logging.getLogger("mammolens.serve")

#: regions listed per image in the study detail (the viewer's heatmap draws as many)
DEFAULT_REGIONS = 3

#: hanging protocol order: right/left CC on top, right/left MLO below (mirrored)
HANGING = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


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
    st: Study,
    user: CurrentUser,
    *,
    show_ai: bool,
    operating_point: float,
    heatmap_path: Callable[[str], Path] | None = None,
    regions: int = DEFAULT_REGIONS,
) -> dict:
    """The study with its images (``st.images`` and ``st.outputs`` loaded); AI results
    only with ``show_ai``; admin-only fields for admins. ``heatmap_path`` (stored heatmap
    name -> file) lets each image list its ``regions`` top-scoring regions (``[]``
    without it)."""
    show = show_ai
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


#: what a reader-study case never shows: identifiers and the truth
CASE_HIDDEN = ("patient_id", "accession", "study_uid", "truth", "study_date")


def case_study(st: Study, user: CurrentUser, **kwargs) -> dict:
    """The study of a reader-study case: :func:`study_detail` (same arguments) without
    identifiers or truth."""
    d = study_detail(st, user, **kwargs)
    for k in CASE_HIDDEN:
        d.pop(k, None)
    return d


def read_row(r: Read | None) -> dict | None:
    if r is None:
        return None
    return {
        "modality": r.modality,
        "score": r.score,
        "birads": r.birads,
        "heatmap_acceptable": r.heatmap_acceptable,
        "updated_at": r.updated_at.isoformat() + "Z",
    }
