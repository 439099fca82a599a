"""The study API lists each image's top-K heatmap regions (original pixel coordinates)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from serve_fixtures import upload, write_study


def _wait_scored(client, headers, sid: int, timeout: float = 180.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = client.get(f"/api/studies/{sid}", headers=headers).json()
        if got["status"] in ("scored", "failed"):
            return got
        time.sleep(0.1)
    raise AssertionError(f"study {sid} not scored in time: {got['status']}")


def _expected(path: Path, k: int) -> list[dict]:
    """What the test scorer's heatmap (the min-max scaled pixels, identity transform) gives."""
    import pydicom

    from mammolens.data.heatmap_io import top_regions

    a = pydicom.dcmread(str(path)).pixel_array.astype(np.float32)
    a = (a - a.min()) / max(float(np.ptp(a)), 1.0)
    return top_regions(a, k)


def test_study_detail_lists_top_regions_per_image(service_app, tmp_path: Path):
    _app, api, _ = service_app
    c = api.client
    admin, r1 = api.login("admin"), api.login("r1")
    _uid, paths = write_study(tmp_path / "s", patient=7, seed=4)
    (sid,) = upload(c, admin, paths).json()["study_ids"]
    st = _wait_scored(c, r1, sid)
    assert st["status"] == "scored"
    by_view = {p.stem.rsplit("_", 1)[1]: p for p in paths}  # "RCC" -> file
    for im in st["images"]:
        regs = im["regions"]
        assert 1 <= len(regs) <= 3
        assert [r["rank"] for r in regs] == list(range(1, len(regs) + 1))
        assert [r["score"] for r in regs] == sorted((r["score"] for r in regs), reverse=True)
        for r in regs:
            assert {"x0", "y0", "x1", "y1", "score", "rank"} <= set(r)
            assert 0 <= r["x0"] < r["x1"] <= im["columns"] and 0 <= r["y0"] < r["y1"] <= im["rows"]
            assert 0.0 < r["score"] <= 1.0
        # the same boxes as the heatmap's own top-K (what predict writes, the viewer draws)
        want = _expected(by_view[im["laterality"] + im["view"]], 3)
        assert [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in regs] == [
            (w["x0"], w["y0"], w["x1"], w["y1"]) for w in want
        ]
        assert [r["score"] for r in regs] == pytest.approx([w["score"] for w in want], abs=1e-5)

    one = c.get(f"/api/studies/{sid}?regions=1", headers=r1).json()
    assert all(len(im["regions"]) == 1 for im in one["images"])
    assert all(im["regions"] == [] for im in c.get(f"/api/studies/{sid}?regions=0", headers=r1).json()["images"])
    assert c.get(f"/api/studies/{sid}?regions=11", headers=r1).status_code == 422
    # a PATCH answers with the same detail, regions included
    r = c.patch(f"/api/studies/{sid}", json={"reading_status": "in_progress"}, headers=r1)
    assert r.status_code == 200 and all(im["regions"] for im in r.json()["images"])

    # blinded reader-study case: no regions until the unaided read is locked
    c.patch(f"/api/studies/{sid}", json={"truth": 1}, headers=admin)
    assert c.post("/api/admin/reader-study", json={"study_ids": [sid]}, headers=admin).status_code == 200
    case_id = c.get("/api/reader/cases", headers=r1).json()["next_case_id"]
    case = c.get(f"/api/reader/cases/{case_id}", headers=r1).json()
    assert all(im["regions"] is None for im in case["study"]["images"])
    c.put(f"/api/reader/cases/{case_id}/unaided", json={"score": 10, "birads": 2}, headers=r1)
    c.post(f"/api/reader/cases/{case_id}/start-aided", headers=r1)
    case = c.get(f"/api/reader/cases/{case_id}", headers=r1).json()
    assert all(im["regions"] for im in case["study"]["images"])
