"""DICOMweb for the service: pull studies from a PACS into the intake.

The client (QIDO-RS, WADO-RS, STOW-RS) is :class:`mammolens.io.dicomweb.PacsClient`,
shared with ``mammolens predict --stow``; it is re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mammolens.io.dicomweb import PacsClient, to_bytes  # noqa: F401 - re-exported (one owner)

log = logging.getLogger("mammolens.serve")


def pull_studies(
    pacs: PacsClient,
    ingest: Callable[..., Any],
    *,
    study_uid: str | None = None,
    patient_id: str | None = None,
    study_date: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    """Find MG studies on the PACS, retrieve them and hand them to ``ingest`` (which queues them).

    Returns ``{"found", "study_ids", "stored", "duplicates", "rejected"}``.
    """
    try:
        uids = pacs.search_studies(study_uid=study_uid, patient_id=patient_id, study_date=study_date, limit=limit)
    except Exception as e:  # noqa: BLE001 - requests errors
        raise ConnectionError(f"{type(e).__name__}") from None
    summary: dict[str, Any] = {"found": len(uids), "study_ids": [], "stored": 0, "duplicates": 0, "rejected": []}
    for uid in uids:
        try:
            instances = pacs.retrieve_mg_instances(uid)
        except Exception as e:  # noqa: BLE001
            summary["rejected"].append({"file": uid, "reason": f"retrieve failed ({type(e).__name__})"})
            continue
        blobs = [(f"{uid}/{ds.SOPInstanceUID}", to_bytes(ds)) for ds in instances]
        if not blobs:
            continue
        res = ingest(blobs, source="dicomweb")
        summary["study_ids"] += res.study_ids
        summary["stored"] += res.stored
        summary["duplicates"] += res.duplicates
        summary["rejected"] += res.to_dict()["rejected"]
    log.info("dicomweb: pulled %d studies (%d new instances)", len(summary["study_ids"]), summary["stored"])
    return summary
