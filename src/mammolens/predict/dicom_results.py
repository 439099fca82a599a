"""``predict --dicom-out``: the predictions table -> per study, the DICOM objects the
service sends to PACS (TID 1500 SR, heatmap secondary captures, Segmentations).

One owner: the objects are written by :func:`mammolens.io.dicom_out.write_study_results`
from the same inputs the service's :mod:`mammolens.serve.outputs` gives it (image,
breast and exam scores; the preferred heatmap on the original image; its peak), and
``--stow`` stores them with the service's DICOMweb client
(:class:`mammolens.io.dicomweb.PacsClient`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mammolens.errors import ConfigError, InputError
from mammolens.qc import QCIssue

QC_STAGE = "dicom-out"


def _is_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def write_dicom_results(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    model_name: str,
    operating_point: float,
    stow: str | None = None,
    pacs: Any = None,
) -> tuple[dict[str, Any], list[QCIssue]]:
    """Write (and optionally STOW) the DICOM results of every study in a predictions table.

    Parameters
    ----------
    table
        ``predict``'s image table (``path``, ``score``, ``breast_score``,
        ``exam_score``, ``heatmap``). Rows whose source is not a DICOM file get a QC
        flag and no objects (the objects reference their source image).
    out_dir
        ``<StudyInstanceUID>/<SOPInstanceUID>.dcm`` files are written below it.
    operating_point
        A finding is asserted in the SR where a score is at or above it.
    stow
        A DICOMweb URL: store each study's objects there (STOW-RS), as the service does.

    Returns
    -------
    (summary, qc)
        ``{"studies", "sr", "sc", "seg", "stored", "dir"}`` and the QC rows (a study that
        fails is reported and the others are still written).
    """
    import pydicom

    from mammolens.data.heatmap_io import heatmap_original, heatmap_peak
    from mammolens.io.dicom_out import StudyImage, write_study_results

    if not 0.0 <= float(operating_point) <= 1.0:
        raise ConfigError(f"operating point must be in [0, 1], got {operating_point}")
    if pacs is None and stow:
        from mammolens.io.dicomweb import PacsClient

        pacs = PacsClient(stow)
    out = Path(out_dir)
    qc: list[QCIssue] = []
    studies: dict[str, list[tuple[Any, Any]]] = {}
    for r in table.itertuples(index=False):
        path = str(getattr(r, "path", "") or "")
        if not _is_dicom(path):
            qc.append(QCIssue(QC_STAGE, "flag", path, "not a DICOM file: no DICOM results (they reference the source image)", str(r.image_id)))
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            studies.setdefault(str(ds.StudyInstanceUID), []).append((r, ds))
        except Exception as e:  # noqa: BLE001 - a header we cannot read: report, go on
            qc.append(QCIssue(QC_STAGE, "reject", path, f"cannot read the DICOM header ({type(e).__name__})", str(r.image_id)))
    summary: dict[str, Any] = {"dir": str(out), "studies": 0, "sr": 0, "sc": 0, "seg": 0, "stored": 0, "stow": stow}
    for uid, rows in sorted(studies.items()):
        items = []
        for r, ds in rows:
            heat, peak = None, None
            hp = str(getattr(r, "heatmap", "") or "")
            if hp and Path(hp).exists():
                heat, _kind = heatmap_original(hp)
                if heat.shape != (int(ds.Rows), int(ds.Columns)):
                    qc.append(QCIssue(QC_STAGE, "flag", str(r.path), f"heatmap maps to {heat.shape[1]}x{heat.shape[0]} but the image is "
                                      f"{ds.Columns}x{ds.Rows}: no heatmap objects for it", str(r.image_id)))
                    heat = None
                else:
                    peak = heatmap_peak(heat)
            bs = getattr(r, "breast_score", None)
            items.append(StudyImage(Path(str(r.path)), float(r.score), None if pd.isna(bs) else float(bs), heat, peak))
        exam = float(max(float(r.exam_score) if not pd.isna(r.exam_score) else float(r.score) for r, _ in rows))
        try:
            written = write_study_results(items, out / uid, exam_score=exam, model_name=model_name, operating_point=operating_point)
        except (InputError, ValueError, OSError) as e:
            reason = e.reason if isinstance(e, InputError) else str(e)
            qc.append(QCIssue(QC_STAGE, "reject", str(rows[0][0].path), f"study {uid}: {reason}"))
            continue
        summary["studies"] += 1
        for kind in ("sr", "sc", "seg"):
            summary[kind] += len(written[kind])
        if pacs is not None:
            files = [p for kind in ("sr", "sc", "seg") for p in written[kind]]
            try:
                pacs.store([pydicom.dcmread(str(p)) for p in files])
                summary["stored"] += len(files)
            except Exception as e:  # noqa: BLE001 - the files stay on disk; the QC row says why
                qc.append(QCIssue(QC_STAGE, "reject", str(out / uid), f"STOW-RS to {stow} failed ({type(e).__name__}: {str(e)[:200]})"))
    return summary, qc
