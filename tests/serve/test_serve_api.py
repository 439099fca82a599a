"""API tests of `mammolens serve`: every endpoint, with its refusals, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_fixtures import PASSWORD, upload, write_mg, write_study


def _wait_scored(client, headers, ids, timeout=180.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = {i: client.get(f"/api/studies/{i}", headers=headers).json() for i in ids}
        if all(g["status"] in ("scored", "failed") for g in got.values()):
            return got
        time.sleep(0.1)
    raise AssertionError(f"not scored in time: {[g['status'] for g in got.values()]}")


def test_health_needs_no_auth_and_everything_else_does(service_app):
    _app, api, _ = service_app
    c = api.client
    r = c.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["worker"] == "running"
    for method, url in [
        ("get", "/api/studies"), ("get", "/api/studies/1"), ("post", "/api/studies"),
        ("patch", "/api/studies/1"), ("delete", "/api/studies/1"), ("post", "/api/studies/1/rescore"),
        ("get", "/api/images/1/image.png"), ("get", "/api/images/1/heatmap.png"), ("get", "/api/images/1/info"),
        ("get", "/api/reader/cases"), ("get", "/api/reader/cases/1"), ("put", "/api/reader/cases/1/unaided"),
        ("post", "/api/reader/cases/1/start-aided"), ("put", "/api/reader/cases/1/aided"),
        ("get", "/api/admin/users"), ("post", "/api/admin/users"), ("patch", "/api/admin/users/1"),
        ("post", "/api/admin/reader-study"), ("get", "/api/admin/reader-study/progress"),
        ("get", "/api/admin/reader-study/export"), ("post", "/api/pacs/pull"), ("get", "/api/queue"),
        ("get", "/api/auth/me"), ("post", "/api/auth/logout"), ("get", "/openapi.json"),
    ]:
        r = getattr(c, method)(url)
        assert r.status_code == 401, (method, url, r.status_code)
    # a forged / tampered token is refused too
    r = c.get("/api/studies", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    # pages redirect to the login page
    r = c.get("/worklist", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert c.get("/login").status_code == 200


def test_login_cookie_csrf_and_logout(service_app):
    _app, api, _ = service_app
    c = api.client
    assert c.post("/api/auth/login", json={"username": "r1", "password": "wrong password"}).status_code == 401
    assert c.post("/api/auth/login", json={"username": "nobody", "password": "x" * 9}).status_code == 401
    r = c.post("/api/auth/login", json={"username": "r1", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["role"] == "reader" and "token" not in body
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    csrf = body["csrf_token"]
    assert c.get("/api/auth/me").json()["username"] == "r1"
    # a state-changing cookie request without the CSRF header is refused
    assert c.post("/api/auth/logout").status_code == 403
    assert c.post("/api/auth/logout", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert c.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    c.cookies.clear()
    assert c.get("/api/auth/me").status_code == 401


def test_login_throttled_after_failures(service_app):
    _app, api, _ = service_app
    for _ in range(10):
        api.client.post("/api/auth/login", json={"username": "r2", "password": "bad password"})
    r = api.client.post("/api/auth/login", json={"username": "r2", "password": PASSWORD})
    assert r.status_code == 429


def test_upload_score_worklist_viewer(service_app, tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG, logger="mammolens")
    _app, api, scorer = service_app
    c = api.client
    admin, reader = api.login("admin"), api.login("r1")
    ids = []
    for k in range(3):
        _uid, paths = write_study(tmp_path / f"s{k}", patient=k + 1, seed=k)
        r = upload(c, admin, paths)
        assert r.status_code == 202, r.text
        assert r.json()["stored"] == 4 and r.json()["rejected"] == []
        ids += r.json()["study_ids"]
    # re-uploading the same files is idempotent
    r = upload(c, admin, paths)
    assert r.status_code == 202 and r.json()["duplicates"] == 4 and r.json()["stored"] == 0
    got = _wait_scored(c, reader, ids)
    assert all(g["status"] == "scored" for g in got.values())
    # scored by the test scorer, in its own process (the server never decodes uploads)
    assert {g["model"] for g in got.values()} == {scorer.name} and scorer.calls == 0

    wl = c.get("/api/studies", headers=reader).json()
    assert wl["total"] == 3
    scores = [it["exam_score"] for it in wl["items"]]
    assert scores == sorted(scores, reverse=True) and all(s is not None for s in scores)
    assert all(it["flagged"] == (it["exam_score"] >= 0.3) for it in wl["items"])
    flagged = c.get("/api/studies?flagged=true", headers=reader).json()["items"]
    assert {it["id"] for it in flagged} == {it["id"] for it in wl["items"] if it["flagged"]}
    assert c.get("/api/studies?q=PAT-002", headers=reader).json()["total"] == 1
    assert c.get("/api/studies?status=queued", headers=reader).json()["total"] == 0
    assert c.get("/api/studies?status=bogus", headers=reader).status_code == 422

    st = c.get(f"/api/studies/{ids[0]}", headers=reader).json()
    assert st["ai_visible"] and len(st["images"]) == 4
    assert set(st["hanging"]) == {"RCC", "LCC", "RMLO", "LMLO"} and all(st["hanging"].values())
    assert st["breast_scores"]["L"] is not None and st["breast_scores"]["R"] is not None
    assert st["exam_score"] == pytest.approx(max(st["breast_scores"].values()), abs=1e-6)
    assert c.get("/api/studies/99999", headers=reader).status_code == 404

    # images: PNGs rendered server-side, window/level changes the pixels, mirrored hanging
    im = st["hanging"]["RCC"]
    info = c.get(f"/api/images/{im}/info", headers=reader).json()
    assert info["window_width"] > 0 and info["mirrored"] is True
    a = c.get(f"/api/images/{im}/image.png", headers=reader)
    assert a.status_code == 200 and a.headers["content-type"] == "image/png"
    img_a = np.asarray(Image.open(io.BytesIO(a.content)))
    assert img_a.shape == (96, 64)
    # hanging: the right breast's chest wall (bright) is on the right of the viewport
    assert img_a[:, -10:].mean() > img_a[:, :10].mean()
    raw = np.asarray(Image.open(io.BytesIO(c.get(f"/api/images/{im}/image.png?hanging=false", headers=reader).content)))
    assert np.array_equal(raw[:, ::-1], img_a)
    b = c.get(f"/api/images/{im}/image.png?wc=500&ww=200", headers=reader)
    assert not np.array_equal(np.asarray(Image.open(io.BytesIO(b.content))), img_a)
    assert c.get(f"/api/images/{im}/image.png?ww=-1", headers=reader).status_code == 422
    h = c.get(f"/api/images/{im}/heatmap.png", headers=reader)
    assert h.status_code == 200
    hm = np.asarray(Image.open(io.BytesIO(h.content)))
    assert hm.shape == (96, 64, 4) and hm[..., 3].max() > 0
    assert c.get("/api/images/99999/image.png", headers=reader).status_code == 404

    # reading status: readers may set it; truth is admin-only
    r = c.patch(f"/api/studies/{ids[0]}", json={"reading_status": "read"}, headers=reader)
    assert r.status_code == 200 and r.json()["reading_status"] == "read"
    assert c.get("/api/studies?reading_status=read", headers=reader).json()["total"] == 1
    assert c.patch(f"/api/studies/{ids[0]}", json={"truth": 1}, headers=reader).status_code == 403
    assert c.patch(f"/api/studies/{ids[0]}", json={"reading_status": "bogus"}, headers=reader).status_code == 422
    assert c.patch(f"/api/studies/{ids[0]}", json={"truth": 1}, headers=admin).json()["truth"] == 1

    # rescore and delete: admin only
    assert c.post(f"/api/studies/{ids[1]}/rescore", headers=reader).status_code == 403
    assert c.post(f"/api/studies/{ids[1]}/rescore", headers=admin).status_code == 202
    _wait_scored(c, admin, [ids[1]])
    assert c.delete(f"/api/studies/{ids[2]}", headers=reader).status_code == 403
    assert c.delete(f"/api/studies/{ids[2]}", headers=admin).status_code == 200
    assert c.get(f"/api/studies/{ids[2]}", headers=admin).status_code == 404
    assert c.get("/api/queue", headers=reader).json()["counts"].get("scored") == 2
    # the service logged its work, and no patient identifier (nor the q= filter value)
    assert "intake: study #" in caplog.text and "worker: study #" in caplog.text
    assert "PAT-" not in caplog.text and "ACC0" not in caplog.text and "Patient" not in caplog.text


def test_upload_refusals(service_app, tmp_path: Path):
    _app, api, _ = service_app
    c = api.client
    admin, reader = api.login("admin"), api.login("r1")
    _uid, paths = write_study(tmp_path / "s", patient=7)
    assert upload(c, reader, paths).status_code == 403  # wrong role
    ct = write_mg(tmp_path / "ct.dcm", study_uid="1.2.3.4", modality="CT")
    txt = tmp_path / "notes.dcm"
    txt.write_text("this is not DICOM")
    r = upload(c, admin, [ct, txt])
    assert r.status_code == 422
    rej = {x["file"]: x["reason"] for x in r.json()["detail"]["rejected"]}
    assert "Modality" in rej["ct.dcm"] and "mammogram" in rej["ct.dcm"]
    assert "DICOM" in rej["notes.dcm"]
    # good and bad together: the good ones are kept, the bad reported
    r = upload(c, admin, [paths[0], txt])
    assert r.status_code == 202 and r.json()["stored"] == 1 and len(r.json()["rejected"]) == 1
    # too large (limit 2 MB in the fixture)
    big = [("files", ("big.dcm", b"\0" * 2_100_000, "application/dicom"))]
    assert c.post("/api/studies", files=big, headers=admin).status_code == 413
    # not multipart, no files
    assert c.post("/api/studies", content=b"abc", headers=admin | {"content-type": "application/dicom"}).status_code == 415
    assert c.post("/api/studies", data={"x": "1"}, headers=admin).status_code == 415
    assert c.post("/api/studies", files={"x": (None, "1")}, headers=admin).status_code == 422
    # too many files (limit 16)
    many = [("files", (f"{i}.dcm", b"x", "application/dicom")) for i in range(17)]
    assert c.post("/api/studies", files=many, headers=admin).status_code == 400
    # path-looking names never reach the filesystem: only echoed back as a base name
    r = c.post("/api/studies", files=[("files", ("../../etc/passwd", b"nope", "text/plain"))], headers=admin)
    assert r.status_code == 422 and r.json()["detail"]["rejected"][0]["file"] == "passwd"
    assert c.post("/api/pacs/pull", json={}, headers=admin).status_code == 409  # no PACS configured
    assert c.post("/api/pacs/pull", json={}, headers=reader).status_code == 403


def test_admin_users(service_app):
    _app, api, _ = service_app
    c = api.client
    admin, reader = api.login("admin"), api.login("r1")
    assert c.get("/api/admin/users", headers=reader).status_code == 403
    assert [u["username"] for u in c.get("/api/admin/users", headers=admin).json()["items"]] == ["admin", "r1", "r2"]
    r = c.post("/api/admin/users", json={"username": "r3", "password": "short"}, headers=admin)
    assert r.status_code == 422
    r = c.post("/api/admin/users", json={"username": "r3", "password": PASSWORD, "role": "reader"}, headers=admin)
    assert r.status_code == 201
    assert c.post("/api/admin/users", json={"username": "r3", "password": PASSWORD}, headers=admin).status_code == 409
    assert c.post("/api/admin/users", json={"username": "bad name!", "password": PASSWORD}, headers=admin).status_code == 422
    uid = r.json()["id"]
    h3 = api.login("r3")
    assert c.get("/api/studies", headers=h3).status_code == 200
    # deactivating revokes the issued tokens
    assert c.patch(f"/api/admin/users/{uid}", json={"active": False}, headers=admin).status_code == 200
    assert c.get("/api/studies", headers=h3).status_code == 401
    me = c.get("/api/auth/me", headers=admin).json()["id"]
    assert c.patch(f"/api/admin/users/{me}", json={"role": "reader"}, headers=admin).status_code == 409
    assert c.patch("/api/admin/users/9999", json={"active": False}, headers=admin).status_code == 404


def test_reader_study_flow_blinding_and_export(service_app, tmp_path: Path):
    _app, api, _ = service_app
    c = api.client
    admin, r1, r2 = api.login("admin"), api.login("r1"), api.login("r2")
    ids = []
    for k in range(3):
        _uid, paths = write_study(tmp_path / f"s{k}", patient=10 + k, seed=k)
        ids += upload(c, admin, paths).json()["study_ids"]
    _wait_scored(c, admin, ids)
    body = {"study_ids": ids, "seed": 3}
    assert c.post("/api/admin/reader-study", json=body, headers=r1).status_code == 403
    r = c.post("/api/admin/reader-study", json=body, headers=admin)
    assert r.status_code == 422 and "truth" in r.json()["detail"]
    for i, sid in enumerate(ids):
        c.patch(f"/api/studies/{sid}", json={"truth": i % 2}, headers=admin)
    r = c.post("/api/admin/reader-study", json=body, headers=admin)
    assert r.status_code == 200 and r.json()["cases_added"] == 6
    # idempotent: no duplicate cases
    assert c.post("/api/admin/reader-study", json=body, headers=admin).json()["cases_added"] == 0

    # reader-study studies leave the readers' worklist and are blinded
    assert c.get("/api/studies", headers=r1).json()["total"] == 0
    assert c.get("/api/studies", headers=admin).json()["total"] == 3

    cases1 = c.get("/api/reader/cases", headers=r1).json()
    assert cases1["progress"] == {"cases": 3, "unaided_done": 0, "aided_done": 0}
    case_id = cases1["next_case_id"]
    case = c.get(f"/api/reader/cases/{case_id}", headers=r1).json()
    assert case["phase"] == "unaided" and case["study"]["ai_visible"] is False
    assert case["study"]["exam_score"] is None and all(im["score"] is None for im in case["study"]["images"])
    assert "patient_id" not in case["study"] and "truth" not in case["study"]
    im = case["study"]["images"][0]["id"]
    assert c.get(f"/api/images/{im}/image.png", headers=r1).status_code == 200
    assert c.get(f"/api/images/{im}/heatmap.png", headers=r1).status_code == 403
    sid = next(s for s in ids if c.get(f"/api/studies/{s}", headers=r1).status_code == 200)
    assert c.get(f"/api/studies/{sid}", headers=r1).json()["exam_score"] is None

    # readers see only their own cases
    other = c.get("/api/reader/cases", headers=r2).json()["items"][0]["case_id"]
    assert c.get(f"/api/reader/cases/{other}", headers=r1).status_code == 404
    assert c.put(f"/api/reader/cases/{other}/unaided", json={"score": 5, "birads": 1}, headers=r1).status_code == 404

    # order: aided before unaided is refused; bad values refused
    assert c.post(f"/api/reader/cases/{case_id}/start-aided", headers=r1).status_code == 409
    assert c.put(f"/api/reader/cases/{case_id}/aided", json={"score": 5, "birads": 1}, headers=r1).status_code == 409
    assert c.put(f"/api/reader/cases/{case_id}/unaided", json={"score": 101, "birads": 1}, headers=r1).status_code == 422
    assert c.put(f"/api/reader/cases/{case_id}/unaided", json={"score": 10, "birads": 7}, headers=r1).status_code == 422
    assert c.put(f"/api/reader/cases/{case_id}/unaided", json={"score": 10, "birads": 2}, headers=r1).status_code == 200
    assert c.put(f"/api/reader/cases/{case_id}/unaided", json={"score": 20, "birads": 3}, headers=r1).status_code == 200
    assert c.post(f"/api/reader/cases/{case_id}/start-aided", headers=r1).json()["phase"] == "aided"
    # the unaided read is locked now; the AI is visible
    assert c.put(f"/api/reader/cases/{case_id}/unaided", json={"score": 90, "birads": 5}, headers=r1).status_code == 409
    case = c.get(f"/api/reader/cases/{case_id}", headers=r1).json()
    assert case["study"]["ai_visible"] and case["study"]["exam_score"] is not None
    assert case["reads"]["unaided"]["score"] == 20
    assert c.get(f"/api/images/{im}/heatmap.png", headers=r1).status_code == 200
    r = c.put(f"/api/reader/cases/{case_id}/aided", json={"score": 35, "birads": 4, "heatmap_acceptable": True}, headers=r1)
    assert r.status_code == 200 and r.json()["phase"] == "done"
    assert c.put(f"/api/reader/cases/{case_id}/aided", json={"score": 1, "birads": 1}, headers=r1).status_code == 409
    # r2 is still blinded on the same study
    assert c.get(f"/api/images/{im}/heatmap.png", headers=r2).status_code == 403

    prog = c.get("/api/admin/reader-study/progress", headers=admin).json()["items"]
    assert {p["reader"]: p["aided_done"] for p in prog} == {"r1": 1, "r2": 0}
    assert c.get("/api/admin/reader-study/progress", headers=r1).status_code == 403
    assert c.get("/api/admin/reader-study/export", headers=r1).status_code == 403
    r = c.get("/api/admin/reader-study/export", headers=admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["reader", "case", "modality", "truth", "score", "birads", "heatmap_acceptable"]
    assert [(x["reader"], x["modality"], x["score"], x["birads"], x["heatmap_acceptable"]) for x in rows] == [
        ("r1", "unaided", "20.0", "3", ""),
        ("r1", "aided", "35.0", "4", "1"),
    ]
    truth = c.get(f"/api/studies/{case['study']['id']}", headers=admin).json()["truth"]
    assert rows[0]["truth"] == str(truth)
    js = c.get("/api/admin/reader-study/export?format=json&complete_only=true", headers=admin).json()
    assert len(js["rows"]) == 2


def test_export_feeds_stats_mrmc(service_app, tmp_path: Path):
    """The reads export is what `mammolens stats mrmc` takes (both modalities, 2 readers)."""
    from typer.testing import CliRunner

    from mammolens.cli import app

    _app, api, _ = service_app
    c = api.client
    admin = api.login("admin")
    ids = []
    for k in range(4):
        _uid, paths = write_study(tmp_path / f"s{k}", patient=20 + k, seed=k, rows=48, cols=32)
        ids += upload(c, admin, paths).json()["study_ids"]
    _wait_scored(c, admin, ids)
    for i, sid in enumerate(ids):
        c.patch(f"/api/studies/{sid}", json={"truth": i % 2}, headers=admin)
    truth = {sid: i % 2 for i, sid in enumerate(ids)}
    assert c.post("/api/admin/reader-study", json={"study_ids": ids}, headers=admin).status_code == 200
    # fixed, imperfect reads (truth 0,1,0,1 by study order): per-reader AUCs differ and
    # none is degenerate, so the MRMC error term cannot vanish by chance
    scores = {
        "r1": ([30, 60, 50, 40], [20, 70, 45, 55]),
        "r2": ([45, 55, 60, 35], [40, 65, 50, 45]),
    }
    for reader, (unaided, aided_scores) in scores.items():
        h = api.login(reader)
        for item in c.get("/api/reader/cases", headers=h).json()["items"]:
            cid = item["case_id"]
            sid = c.get(f"/api/reader/cases/{cid}", headers=h).json()["study"]["id"]
            k = ids.index(sid)
            base = float(unaided[k])
            assert c.put(f"/api/reader/cases/{cid}/unaided", json={"score": base, "birads": 2 + truth[sid]}, headers=h).status_code == 200
            assert c.post(f"/api/reader/cases/{cid}/start-aided", headers=h).status_code == 200
            body = {"score": float(aided_scores[k]), "birads": 3 + truth[sid], "heatmap_acceptable": bool(cid % 2)}
            assert c.put(f"/api/reader/cases/{cid}/aided", json=body, headers=h).status_code == 200
        assert c.get("/api/reader/cases", headers=h).json()["progress"] == {"cases": 4, "unaided_done": 4, "aided_done": 4}
    reads = tmp_path / "reads.csv"
    reads.write_text(c.get("/api/admin/reader-study/export", headers=admin).text)
    r = CliRunner().invoke(app, ["stats", "mrmc", str(reads), "--json"])
    assert r.exit_code == 0, r.output
    assert "unaided" in r.output and "aided" in r.output
