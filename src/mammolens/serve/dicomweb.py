"""DICOMweb: find and retrieve studies on a PACS (QIDO-RS, WADO-RS), store results (STOW-RS).

Built on ``dicomweb-client``. Only mammography series (Modality ``MG``) are retrieved,
so the service's own outputs (SR, SC, SEG) on the same study are never pulled back in.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mammolens.serve")


class PacsClient:
    """A DICOMweb endpoint, e.g. ``http://127.0.0.1:8042/dicom-web`` (Orthanc)."""

    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        from dicomweb_client.api import DICOMwebClient

        if not url.startswith(("http://", "https://")):
            from mammolens.errors import ConfigError

            raise ConfigError(f"PACS URL must be http(s)://..., got {url!r}")
        self.url = url.rstrip("/")
        self.client = DICOMwebClient(url=self.url)
        self.client.set_http_retry_params(retry=False)
        self.timeout_s = timeout_s

    def search_studies(
        self,
        *,
        study_uid: str | None = None,
        patient_id: str | None = None,
        study_date: str | None = None,
        limit: int = 20,
    ) -> list[str]:
        """StudyInstanceUIDs of mammography studies matching the filters (QIDO-RS)."""
        filters: dict[str, Any] = {}
        if study_uid:
            filters["StudyInstanceUID"] = study_uid
        if patient_id:
            filters["PatientID"] = patient_id
        if study_date:
            filters["StudyDate"] = study_date
        found = self.client.search_for_studies(search_filters=filters, limit=limit)
        uids = []
        for item in found:
            uid = (item.get("0020000D") or {}).get("Value", [None])[0]
            mods = (item.get("00080061") or {}).get("Value", [])
            if uid and (not mods or "MG" in mods):
                uids.append(str(uid))
        return uids

    def retrieve_mg_instances(self, study_uid: str) -> list[Any]:
        """All MG instances of a study (pydicom datasets), series by series (WADO-RS)."""
        series = self.client.search_for_series(study_uid, search_filters={"Modality": "MG"})
        out = []
        for item in series:
            mod = (item.get("00080060") or {}).get("Value", [""])[0]
            if mod != "MG":
                continue
            suid = item["0020000E"]["Value"][0]
            out.extend(self.client.retrieve_series(study_uid, suid))
        return out

    def store(self, datasets: list[Any]) -> None:
        """Store datasets (STOW-RS); raises on any failure."""
        if datasets:
            self.client.store_instances(datasets)


def to_bytes(ds: Any) -> bytes:
    """A dataset as a DICOM Part 10 file in memory."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


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
