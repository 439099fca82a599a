"""PACS round trip with Orthanc + DICOMweb: push a study, pull and score it in the
service, find the SR, the heatmap overlays and the segmentations back in Orthanc."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from serve_fixtures import PASSWORD, SECRET, SchemaChecker, write_study

pytestmark = pytest.mark.orthanc


def test_pull_score_and_store_back(orthanc_url: str, tiny_run: Path, tmp_path: Path):
    import highdicom as hd
    from dicomweb_client.api import DICOMwebClient
    from fastapi.testclient import TestClient

    from mammolens.io.dicom_out import NOT_CLINICAL
    from mammolens.serve.app import ServeSettings, create_app
    from mammolens.serve.auth import create_user

    pacs = DICOMwebClient(url=orthanc_url)
    uid, paths = write_study(tmp_path / "s", patient=77, rows=128, cols=96)
    pacs.store_instances([pydicom.dcmread(p) for p in paths])
    assert any(s["0020000D"]["Value"][0] == uid for s in pacs.search_for_studies())

    settings = ServeSettings(model=tiny_run, data_dir=tmp_path / "data", pacs_url=orthanc_url, secret_key=SECRET)
    app = create_app(settings)
    with app.state.svc.db.session() as s:
        create_user(s, "admin", PASSWORD, role="admin")
    with TestClient(app) as c:
        r = c.post("/api/auth/login", json={"username": "admin", "password": PASSWORD, "bearer": True})
        h = {"Authorization": f"Bearer {r.json()['token']}"}
        r = c.post("/api/pacs/pull", json={"study_uid": uid}, headers=h)
        assert r.status_code == 202, r.text
        body = SchemaChecker(c.get("/openapi.json", headers=h).json())(r, "/api/pacs/pull")
        assert body["found"] == 1 and body["stored"] == 4 and body["rejected"] == []
        sid = body["study_ids"][0]
        end = time.monotonic() + 300
        while time.monotonic() < end:
            st = c.get(f"/api/studies/{sid}", headers=h).json()
            # the outputs are a queue of their own: done once past pending / writing
            if st["pacs_status"] not in ("", "pending", "writing") or st["status"] == "failed":
                break
            time.sleep(0.3)
        assert st["status"] == "scored", st["error"]
        assert st["source"] == "dicomweb" and st["pacs_status"] == "stored"
        assert all(o["stored"] for o in st["outputs"])
        # pulling again finds only what is there already (no outputs pulled back in)
        again = c.post("/api/pacs/pull", json={"study_uid": uid}, headers=h).json()
        assert again["stored"] == 0 and again["duplicates"] == 4 and again["rejected"] == []

    series = pacs.search_for_series(uid)
    mods = sorted(s["00080060"]["Value"][0] for s in series)
    assert mods.count("MG") == 4 and "SR" in mods and "SEG" in mods
    descs = {s["00080060"]["Value"][0]: s.get("0008103E", {}).get("Value", [""])[0] for s in series}
    assert NOT_CLINICAL in descs["SR"] and NOT_CLINICAL in descs["SEG"]
    sr_series = next(s for s in series if s["00080060"]["Value"][0] == "SR")
    (sr_ds,) = pacs.retrieve_series(uid, sr_series["0020000E"]["Value"][0])
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 4
    sources = {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    refs = {g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for g in groups}
    assert refs == sources
    # the overlay secondary captures (RGB) are there too: one series per view (an SC's
    # laterality is series-level), each referencing its source image
    sc = [s for s in series if s["00080060"]["Value"][0] == "OT"]
    assert len(sc) == 4
    for ser in sc:
        assert "heatmap" in ser.get("0008103E", {}).get("Value", [""])[0]
        (ds,) = pacs.retrieve_series(uid, ser["0020000E"]["Value"][0])
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in sources
