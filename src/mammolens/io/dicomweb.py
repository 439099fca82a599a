"""A DICOMweb endpoint: find and retrieve studies (QIDO-RS, WADO-RS), store results (STOW-RS).

Built on ``dicomweb-client``. Used by the service (pull, and storing its outputs) and by
``mammolens predict --stow``. Only mammography series (Modality ``MG``) are retrieved,
so the AI outputs (SR, SC, SEG) stored on the same study are never pulled back in.
"""

from __future__ import annotations

import io
from typing import Any


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
