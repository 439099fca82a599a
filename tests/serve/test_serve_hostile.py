"""Hostile input and faults against `mammolens serve` (issue 11): a poison upload, a
re-sent SOP Instance UID, logout, a burst of wrong passwords, out-of-range numbers,
undecodable and oversized images, a crash between scoring and the DICOM outputs."""

from __future__ import annotations

import hashlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from serve_fixtures import (
    PASSWORD,
    SECRET,
    AbortingScorer,
    PixelScorer,
    upload,
    write_mg,
    write_poison_j2k,
    write_study,
)

from mammolens.serve.db import Database
from mammolens.serve.intake import check_mammogram, ingest_blobs
from mammolens.serve.models import Image, Study
from mammolens.serve.scoring import IsolatedScorer
from mammolens.serve.storage import Storage
from mammolens.serve.worker import Worker, claim_next, requeue_interrupted, score_study


def _wait_done(c, headers, ids, timeout=240.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        got = {i: c.get(f"/api/studies/{i}", headers=headers).json() for i in ids}
        if all(g["status"] in ("scored", "failed") for g in got.values()):
            return got
        if time.monotonic() > end:
            raise AssertionError(f"not done in time: {[g['status'] for g in got.values()]}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- poison upload


def test_poison_upload_fails_its_study_and_the_server_stays_up(service_app, tmp_path: Path):
    """A JPEG 2000 image that aborts its decoder: the study ends `failed` naming the
    image, viewing it is a 422, and the server goes on scoring the next studies."""
    _app, api, _ = service_app
    c = api.client
    admin = api.login("admin")
    uid, paths = write_study(tmp_path / "s", patient=5)
    poison = write_poison_j2k(tmp_path / "poison.dcm", study_uid=uid)
    r = upload(c, admin, [*paths[:2], poison])  # nothing in the header gives it away
    assert r.status_code == 202, r.text
    sid = r.json()["study_ids"][0]
    st = _wait_done(c, admin, [sid])[sid]
    assert st["status"] == "failed"
    assert 1 <= st["attempts"] <= 3
    poison_id = max(im["id"] for im in st["images"])
    assert f"image #{poison_id} (L MLO)" in st["error"] and "JPEG 2000" in st["error"], st["error"]
    # the reader opens the poisoned image: a clean refusal, not a dead server
    for url in (f"/api/images/{poison_id}/image.png", f"/api/images/{poison_id}/info"):
        r = c.get(url, headers=admin)
        assert r.status_code == 422 and "cannot be decoded" in r.json()["detail"], r.text
    assert c.get("/healthz").json() == c.get("/healthz").json() | {"status": "ok", "worker": "running"}
    # the good images of that study still render; later studies are scored
    ok_id = min(im["id"] for im in st["images"])
    assert c.get(f"/api/images/{ok_id}/image.png", headers=admin).status_code == 200
    _uid2, paths2 = write_study(tmp_path / "s2", patient=6, seed=2)
    sid2 = upload(c, admin, paths2).json()["study_ids"][0]
    assert _wait_done(c, admin, [sid2])[sid2]["status"] == "scored"


def test_a_crashing_scorer_is_retried_a_bounded_number_of_times(tmp_path: Path, db_url: str):
    """The scoring process dies on every attempt (no single image is to blame): the web
    process lives, the study is retried and then `failed` with the reason."""
    db = Database(db_url)
    storage = Storage(tmp_path / "store")
    scorer = IsolatedScorer(AbortingScorer(), timeout=120)
    try:
        _uid, paths = write_study(tmp_path / "s", rows=48, cols=32)
        sid = ingest_blobs(db, storage, [(p.name, p.read_bytes()) for p in paths[:2]]).study_ids[0]
        w = Worker(db, storage, scorer, max_attempts=2)
        assert w.run_once() and w.run_once()
        assert w.run_once() is False  # nothing left: not claimed a third time
        with db.session() as s:
            st = s.get(Study, sid)
            assert st.status == "failed" and st.attempts == 2
            assert "scoring process failed" in st.error and "SIGABRT" in st.error
    finally:
        scorer.close()
        db.dispose()


def test_attempts_stay_bounded_across_restarts(tmp_path: Path, db_url: str):
    """Each restart finds the study `scoring` (the process died on it): after
    `max_attempts` claims it is `failed`, never claimed again (it was 4 of 3 before)."""
    db = Database(db_url)
    storage = Storage(tmp_path / "store")
    try:
        _uid, paths = write_study(tmp_path / "s", rows=48, cols=32)
        sid = ingest_blobs(db, storage, [(p.name, p.read_bytes()) for p in paths[:1]]).study_ids[0]
        for _ in range(3):
            assert requeue_interrupted(db, max_attempts=3) in (0, 1)  # a (re)start
            assert claim_next(db, max_attempts=3) == sid  # ... and the process dies scoring it
        assert requeue_interrupted(db, max_attempts=3) == 0
        assert claim_next(db, max_attempts=3) is None
        with db.session() as s:
            st = s.get(Study, sid)
            assert st.status == "failed" and st.attempts == 3 and "interrupted 3 times" in st.error
    finally:
        db.dispose()


# --------------------------------------------------------------------------- immutability


def test_resent_uid_never_overwrites_a_stored_instance(service_app, tmp_path: Path):
    app, api, _ = service_app
    c = api.client
    admin = api.login("admin")
    uid, paths = write_study(tmp_path / "s", patient=1)
    sid = upload(c, admin, paths).json()["study_ids"][0]
    before = _wait_done(c, admin, [sid])[sid]
    svc = app.state.svc
    with svc.db.session() as s:
        im = s.query(Image).filter_by(study_id=sid).order_by(Image.id).first()
        stored = svc.storage.resolve("instances", im.file)
        sop, digest = im.sop_instance_uid, hashlib.sha256(stored.read_bytes()).hexdigest()
    # identical bytes: a duplicate
    r = upload(c, admin, [paths[0]])
    assert r.status_code == 202 and r.json()["duplicates"] == 1 and r.json()["stored"] == 0
    # a different patient's image under the same SOP Instance UID, and a truncated copy
    other = write_mg(tmp_path / "other.dcm", study_uid=uid, patient_id="PAT-999", seed=7)
    ds = pydicom.dcmread(other)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.save_as(other, enforce_file_format=True)
    data = paths[0].read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 1000])
    for bad in (other, truncated):
        r = upload(c, admin, [bad])
        assert r.status_code in (409, 422), r.text
        if r.status_code == 409:
            body = r.json()["detail"]
            assert body["conflicts"] == 1 and body["stored"] == 0
            assert "already stored" in body["rejected"][0]["reason"]
    # with a good new file beside it: the good one is stored, the conflict reported
    _uid3, more = write_study(tmp_path / "s3", patient=3, seed=3)
    r = upload(c, admin, [other, more[0]])
    assert r.status_code == 202 and r.json()["stored"] == 1 and r.json()["conflicts"] == 1
    # nothing changed: bytes, patient, scores
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    after = c.get(f"/api/studies/{sid}", headers=admin).json()
    assert after["patient_id"] == "PAT-001" and after["exam_score"] == before["exam_score"]
    assert [i["score"] for i in after["images"]] == [i["score"] for i in before["images"]]


# --------------------------------------------------------------------------- sessions


def test_logout_revokes_the_token_and_the_cookie_on_the_server(service_app):
    _app, api, _ = service_app
    c = api.client
    bearer = api.login("r1")
    assert c.get("/api/auth/me", headers=bearer).status_code == 200
    assert c.post("/api/auth/logout", headers=bearer).status_code == 200
    assert c.get("/api/auth/me", headers=bearer).status_code == 401
    assert c.put("/api/reader/cases/1/unaided", json={"score": 5, "birads": 1}, headers=bearer).status_code == 401
    # a cookie session: a copy of the cookie kept after logout no longer works either
    r = c.post("/api/auth/login", json={"username": "r1", "password": PASSWORD})
    cookie, csrf = c.cookies.get("mammolens_session"), r.json()["csrf_token"]
    assert c.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    c.cookies.set("mammolens_session", cookie)
    assert c.get("/api/auth/me").status_code == 401
    assert c.get("/worklist", follow_redirects=False).status_code == 303
    c.cookies.clear()
    # other sessions of the same user are not affected
    h1, h2 = api.login("r1"), api.login("r1")
    assert c.post("/api/auth/logout", headers=h1).status_code == 200
    assert c.get("/api/auth/me", headers=h2).status_code == 200


def _live_app(tmp_path: Path, db_url: str):
    from mammolens.serve.app import ServeSettings, create_app
    from mammolens.serve.auth import create_user

    app = create_app(
        ServeSettings(data_dir=tmp_path / "data", db_url=db_url, secret_key=SECRET, dicom_out=False),
        scorer=PixelScorer(),
    )
    with app.state.svc.db.session() as s:
        create_user(s, "r1", PASSWORD, role="reader")
    return app


def test_concurrent_wrong_passwords_are_throttled(tmp_path: Path, db_url: str):
    """30 wrong passwords at once: at most 10 are checked (401), the rest get 429."""
    from mammolens.serve.threaded import running_server

    app = _live_app(tmp_path, db_url)
    with running_server(app) as base:

        def attempt(i: int) -> int:
            body = {"username": "r1", "password": f"wrong password {i}"}
            return httpx.post(f"{base}/api/auth/login", json=body, timeout=120).status_code

        with ThreadPoolExecutor(max_workers=30) as pool:
            codes = list(pool.map(attempt, range(30)))
        assert set(codes) <= {401, 429}
        assert codes.count(401) <= 10 and codes.count(429) >= 20, codes
        # and the right password is refused too while locked out
        r = httpx.post(f"{base}/api/auth/login", json={"username": "r1", "password": PASSWORD}, timeout=60)
        assert r.status_code == 429


# --------------------------------------------------------------------------- 422, not 500


def test_out_of_range_numbers_are_422_not_500(service_app, caplog):
    app, api, _ = service_app
    c = api.client
    admin, reader = api.login("admin"), api.login("r1")
    huge = str(2**63)
    for url in (
        f"/api/studies?offset={huge}", f"/api/studies/{huge}", f"/api/images/{huge}/image.png",
        f"/api/images/{huge}/info", f"/api/reader/cases/{huge}", f"/api/studies/{2**64 + 5}",
        "/api/studies/2147483648",  # beyond PostgreSQL INTEGER
    ):
        r = c.get(url, headers=admin)
        assert r.status_code == 422, (url, r.status_code, r.text)
    assert c.patch(f"/api/admin/users/{huge}", json={"active": False}, headers=admin).status_code == 422
    r = c.post("/api/admin/reader-study", json={"study_ids": [2**63]}, headers=admin)
    assert r.status_code == 422
    # NaN / Infinity in a read (Python's JSON accepts them), and in the viewer's window
    for bad in ("NaN", "Infinity", "-Infinity", "1e999"):
        r = c.put("/api/reader/cases/1/unaided", content=f'{{"score": {bad}, "birads": 2}}',
                  headers=reader | {"content-type": "application/json"})
        assert r.status_code == 422, (bad, r.status_code, r.text)
        json.loads(r.text)  # a valid JSON body
    assert c.get("/api/images/1/image.png?wc=nan", headers=reader).status_code == 422
    assert c.get("/api/images/1/image.png?ww=inf", headers=reader).status_code == 422
    assert "Traceback" not in caplog.text


def test_a_500_carries_the_security_headers_and_no_details(service_app):
    app, api, _ = service_app

    def boom() -> dict:
        raise RuntimeError("secret detail PAT-001")

    app.add_api_route("/api/test-boom", boom)
    r = api.client.get("/api/test-boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    assert "PAT-001" not in r.text
    for h in ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Referrer-Policy"):
        assert h.lower() in r.headers
    assert r.headers["cache-control"] == "no-store"


def test_image_pngs_are_not_cached(service_app, tmp_path: Path):
    _app, api, _ = service_app
    c = api.client
    admin = api.login("admin")
    _uid, paths = write_study(tmp_path / "s")
    sid = upload(c, admin, paths).json()["study_ids"][0]
    st = _wait_done(c, admin, [sid])[sid]
    im = st["images"][0]["id"]
    for url in (f"/api/images/{im}/image.png", f"/api/images/{im}/heatmap.png"):
        r = c.get(url, headers=admin)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"


# --------------------------------------------------------------------------- header and memory


def _big_header(path: Path, *, deflate: bool, rows: int = 12000, cols: int = 12000) -> Path:
    """A mammogram header claiming rows x cols; ``deflate``: a valid deflated image of
    that size (zeros compress to almost nothing), else 100 bytes of pixel data."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    write_mg(path, study_uid="1.2.826.0.1.3680043.8.498.1")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, cols
    if deflate:
        ds.PixelData = np.zeros((rows, cols), np.uint16).tobytes()
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    else:
        ds.PixelData = b"\0" * 100
    ds.save_as(path, enforce_file_format=True)
    return path


def test_upload_refuses_what_the_header_disproves_and_caps_decoded_pixels(service_app, tmp_path: Path):
    _app, api, _ = service_app
    c = api.client
    admin = api.login("admin")
    claim = _big_header(tmp_path / "claim.dcm", deflate=False)
    bomb = _big_header(tmp_path / "bomb.dcm", deflate=True)
    assert bomb.stat().st_size < 2_000_000  # 288 MB of pixels in a small file
    r = upload(c, admin, [claim, bomb])
    assert r.status_code == 422
    reasons = {x["file"]: x["reason"] for x in r.json()["detail"]["rejected"]}
    assert "12000x12000" in reasons["claim.dcm"] and "limit" in reasons["claim.dcm"]
    assert "12000x12000" in reasons["bomb.dcm"] and "limit" in reasons["bomb.dcm"]


def test_the_deflate_check_stays_small_in_memory(tmp_path: Path):
    import tracemalloc

    from mammolens.errors import InputError

    data = _big_header(tmp_path / "bomb.dcm", deflate=True).read_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="image too large"):
            check_mammogram(data, "bomb.dcm")
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak  # the image would be 288 MB


def test_render_cache_is_bounded_in_bytes():
    from mammolens.serve.render import Display, RenderCache

    def disp(mb: float) -> Display:
        return Display(np.zeros(int(mb * 1024 * 1024 / 4), np.float32).reshape(1, -1), False)

    cache = RenderCache(int(2.5 * 1024 * 1024))
    for k in "abc":
        cache.put(k, disp(1))
    assert len(cache) == 2 and cache.get("a") is None and cache.nbytes <= cache.max_bytes
    cache.put("huge", disp(3))  # larger than the whole budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2


# --------------------------------------------------------------------------- outputs queue


def _outputs_writer(db, storage):
    from mammolens.serve.outputs import write_study_outputs

    return lambda sid: write_study_outputs(db, storage, sid, operating_point=0.5)


def test_outputs_are_written_after_a_crash_between_scored_and_outputs(tmp_path: Path, db_url: str):
    """kill -9 right after the `scored` commit leaves the study as this test does (the
    database holds only committed state): `pending` outputs, none written. The next
    start writes them; so it does for a kill while writing (`writing`)."""
    db = Database(db_url)
    storage = Storage(tmp_path / "store")
    try:
        ids = []
        for k in range(2):
            _uid, paths = write_study(tmp_path / f"s{k}", patient=k, seed=k, rows=48, cols=32)
            ids += ingest_blobs(db, storage, [(p.name, p.read_bytes()) for p in paths]).study_ids
        for sid in ids:  # scored, then the process is killed
            assert claim_next(db) == sid
            assert score_study(db, storage, PixelScorer(), sid, outputs=True) == "scored"
        from mammolens.serve.worker import claim_outputs

        assert claim_outputs(db, ids[1]) == ids[1]  # ... killed while writing this one
        with db.session() as s:
            assert {s.get(Study, i).pacs_status for i in ids} == {"pending", "writing"}
            assert not s.get(Study, ids[0]).outputs
        w = Worker(db, storage, PixelScorer(), after_score=_outputs_writer(db, storage))
        requeue_interrupted(db)  # what Worker.start() does first
        assert w.run_once() and w.run_once() and w.run_once() is False
        with db.session() as s:
            for i in ids:
                st = s.get(Study, i)
                assert st.pacs_status == "written" and sorted({o.kind for o in st.outputs}) == ["sc", "seg", "sr"]
    finally:
        db.dispose()


def test_outputs_of_a_source_without_patient_name(tmp_path: Path, db_url: str):
    db = Database(db_url)
    storage = Storage(tmp_path / "store")
    try:
        _uid, paths = write_study(tmp_path / "s", rows=48, cols=32)
        for p in paths:
            ds = pydicom.dcmread(p)
            del ds.PatientName
            ds.save_as(p, enforce_file_format=True)
        sid = ingest_blobs(db, storage, [(p.name, p.read_bytes()) for p in paths]).study_ids[0]
        w = Worker(db, storage, PixelScorer(), after_score=_outputs_writer(db, storage))
        assert w.run_once()
        with db.session() as s:
            st = s.get(Study, sid)
            assert st.status == "scored" and st.pacs_status == "written", st.error
            sr = next(o for o in st.outputs if o.kind == "sr")
            assert str(pydicom.dcmread(storage.resolve("outputs", sr.file)).PatientName) == ""
    finally:
        db.dispose()


def test_failed_output_writing_is_retried_then_failed(tmp_path: Path, db_url: str):
    db = Database(db_url)
    storage = Storage(tmp_path / "store")
    calls = []

    def broken(sid):
        calls.append(sid)
        raise OSError("disk full")

    try:
        _uid, paths = write_study(tmp_path / "s", rows=48, cols=32)
        sid = ingest_blobs(db, storage, [(p.name, p.read_bytes()) for p in paths[:1]]).study_ids[0]
        w = Worker(db, storage, PixelScorer(), max_attempts=2, after_score=broken)
        while w.run_once():
            pass
        with db.session() as s:
            st = s.get(Study, sid)
            assert st.status == "scored" and st.pacs_status == "failed" and st.output_attempts == 2
        assert calls == [sid, sid]
    finally:
        db.dispose()


def test_check_mammogram_is_unchanged_for_good_files(tmp_path: Path):
    p = write_mg(tmp_path / "ok.dcm", study_uid="1.2.3")
    inst = check_mammogram(p.read_bytes(), "ok.dcm")
    assert (inst.rows, inst.columns, inst.laterality) == (96, 64, "L")
    with io.BytesIO(p.read_bytes()) as fh:
        assert pydicom.dcmread(fh).Rows == 96


def test_undecodable_uploads_are_refused_or_fail_cleanly(service_app, tmp_path: Path):
    """What the header disproves is refused at upload; a damaged compressed stream (the
    header cannot tell) fails its study with the reason, and the viewer answers 422."""
    from pydicom.uid import RLELossless

    _app, api, _ = service_app
    c = api.client
    admin = api.login("admin")
    uid = "1.2.826.0.1.3680043.8.498.99"
    good = write_mg(tmp_path / "good.dcm", study_uid=uid)
    short, claim, rle = tmp_path / "short.dcm", tmp_path / "claim.dcm", tmp_path / "rle.dcm"
    ds = pydicom.dcmread(good)
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(short, enforce_file_format=True)
    ds = pydicom.dcmread(good)
    ds.Rows = ds.Columns = 2000
    ds.save_as(claim, enforce_file_format=True)
    r = upload(c, admin, [short, claim])
    assert r.status_code == 422
    reasons = {x["file"]: x["reason"] for x in r.json()["detail"]["rejected"]}
    assert "short pixel data" in reasons["short.dcm"] and "2000 x 2000" in reasons["claim.dcm"]
    ds = pydicom.dcmread(good)
    ds.compress(RLELossless)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(rle, enforce_file_format=True)
    r = upload(c, admin, [rle])
    assert r.status_code == 202, r.text
    sid = r.json()["study_ids"][0]
    st = _wait_done(c, admin, [sid])[sid]
    assert st["status"] == "failed" and "image #" in st["error"], st
    im = st["images"][0]["id"]
    for url in (f"/api/images/{im}/image.png", f"/api/images/{im}/info"):
        r = c.get(url, headers=admin)
        assert r.status_code == 422 and "cannot be decoded" in r.json()["detail"]
