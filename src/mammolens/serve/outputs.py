"""DICOM outputs of a scored study: SR + heatmap objects, kept in the store and sent to the PACS.

Called by the worker after a study is scored. The objects are built by
:func:`mammolens.io.dicom_out.write_study_results` (TID 1500 SR, RGB secondary-capture
overlays, fractional segmentations), filed under digest names, recorded in the
``outputs`` table and, when a PACS is configured, stored there with STOW-RS.

The overlays decode the uploaded images, so the objects are built in a sandbox child
(:func:`mammolens.io.sandbox.run_isolated`), never in the server's process.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from mammolens.serve import queries
from mammolens.serve.db import Database
from mammolens.serve.models import Output, Study
from mammolens.serve.scoring import heatmap_original
from mammolens.serve.storage import Storage, digest_name

log = logging.getLogger("mammolens.serve")


def _build_task(task: tuple) -> dict[str, list[Path]]:
    from mammolens.io.dicom_out import write_study_results

    items, out_dir, kwargs = task
    return write_study_results(items, out_dir, **kwargs)


def _build_isolated(items, out_dir: Path, **kwargs) -> dict[str, list[Path]]:
    from mammolens.errors import InputError
    from mammolens.io.sandbox import run_isolated

    out = run_isolated(_build_task, (items, out_dir, kwargs), timeout=600, path_of=lambda _t: None)
    if isinstance(out, InputError):
        raise out
    return out


def write_study_outputs(
    db: Database,
    storage: Storage,
    study_id: int,
    *,
    pacs=None,
    operating_point: float | None = None,
) -> dict[str, int]:
    """Write (and store to ``pacs``) the DICOM outputs of a scored study.

    Replaces the outputs of an earlier scoring of the same study. Returns counts per kind.
    """
    import pydicom

    from mammolens.io.dicom_out import StudyImage

    with db.session() as s:
        st = s.get(Study, study_id)
        if st is None or st.status != "scored":
            return {}
        imgs = queries.study_images(s, study_id)
        exam, model = float(st.exam_score), st.model or "mammolens"
        items = []
        for im in imgs:
            if im.score is None:
                continue
            heat = heatmap_original(storage.resolve("heatmaps", im.heatmap_file))[0] if im.heatmap_file else None
            peak = (im.peak_x, im.peak_y) if im.peak_x is not None else None
            items.append(StudyImage(storage.resolve("instances", im.file), float(im.score), im.breast_score, heat, peak))
        old = [(o.id, o.file) for o in st.outputs]
    if not items:
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="mammolens-out-", dir=storage.root))
    try:
        written = _build_isolated(items, tmp, exam_score=exam, model_name=model, operating_point=operating_point)
        rows = []
        datasets = []
        for kind, paths in written.items():
            for p in paths:
                ds = pydicom.dcmread(str(p))
                name = digest_name(f"output:{ds.SOPInstanceUID}", ".dcm")
                shutil.move(str(p), storage.new_path("outputs", name))
                rows.append(Output(study_id=study_id, kind=kind, sop_instance_uid=str(ds.SOPInstanceUID),
                                   series_uid=str(ds.SeriesInstanceUID), file=name))
                datasets.append(ds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stored = False
    if pacs is not None:
        try:
            pacs.store(datasets)
            stored = True
        except Exception as e:  # noqa: BLE001 - the outputs stay in the store; retry by rescoring
            log.warning("outputs: STOW-RS of study #%d failed (%s)", study_id, type(e).__name__)
    with db.session() as s:
        for oid, _f in old:
            o = s.get(Output, oid)
            if o is not None:
                s.delete(o)
        for r in rows:
            r.stored = stored
            s.add(r)
        st = s.get(Study, study_id)
        if st is not None:
            st.pacs_status = "stored" if stored else ("failed" if pacs is not None else "written")
    for _oid, f in old:
        storage.delete("outputs", f)
    counts = {k: len(v) for k, v in written.items()}
    log.info("outputs: study #%d: %s%s", study_id, counts, " stored to PACS" if stored else "")
    return counts
