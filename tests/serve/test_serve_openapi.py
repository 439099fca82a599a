"""The HTTP API documents itself: ``/openapi.json`` (signed-in users) names a response
model for every JSON endpoint, and the service's real answers validate against those
schemas with an independent JSON Schema validator (``jsonschema``, draft 2020-12, the
dialect of OpenAPI 3.1), strictly: a field the schema does not declare is an error."""

from __future__ import annotations

import time
from pathlib import Path

import jsonschema
import pytest
from fastapi.routing import APIRoute
from serve_fixtures import SchemaChecker as Checker
from serve_fixtures import upload, write_study

#: response models the schema must name (one per kind of answer of the API)
EXPECTED_MODELS = {
    "Health", "LoginResult", "Me", "Ok", "Worklist", "StudyRow", "StudyDetail", "ImageRow",
    "IntakeResult", "PullResult", "Deleted", "Requeued", "Queue", "ImageInfo", "CaseList", "Case",
    "BlindedStudy", "ReadSaved", "CasePhase", "UserList", "UserOut", "ReaderStudySetup",
    "ProgressList", "ReadsExport", "Region",
}


def _json_routes(app) -> list[APIRoute]:
    """The JSON operations of the app's routers (all but the PNGs and the CSV/JSON export)."""
    from mammolens.serve.routes import ROUTERS

    return [
        r for router in ROUTERS for r in router.routes
        if isinstance(r, APIRoute) and r.include_in_schema and (r.path.startswith("/api/") or r.path == "/healthz")
        and not r.path.endswith(".png") and not r.path.endswith("/export")
    ]


def test_openapi_needs_a_session_and_lists_every_response_model(service_app):
    app, api, _ = service_app
    c = api.client
    assert c.get("/openapi.json").status_code == 401
    assert c.get("/docs").status_code in (303, 404) and c.get("/redoc").status_code in (303, 404)
    doc = c.get("/openapi.json", headers=api.login("r1")).json()
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "mammolens"
    schemas = doc["components"]["schemas"]
    assert EXPECTED_MODELS <= set(schemas), sorted(EXPECTED_MODELS - set(schemas))
    # every JSON endpoint declares its model, and the document carries it
    routes = _json_routes(app)
    assert len(routes) >= 20
    for route in routes:
        assert route.response_model is not None, f"{route.path}: no response_model"
        for method in route.methods:
            op = doc["paths"][route.path][method.lower()]
            ok = str(route.status_code or 200)
            assert "application/json" in op["responses"][ok]["content"], (method, route.path)
    # the PNGs and the export document their media types
    assert "image/png" in doc["paths"]["/api/images/{image_id}/image.png"]["get"]["responses"]["200"]["content"]
    export = doc["paths"]["/api/admin/reader-study/export"]["get"]["responses"]["200"]["content"]
    assert {"text/csv", "application/json"} <= set(export)
    # a blinded case documents that it has no identifiers; the full study has them
    assert "patient_id" not in schemas["BlindedStudy"]["properties"]
    assert "truth" not in schemas["BlindedStudy"]["properties"]
    assert {"patient_id", "accession", "study_uid"} <= set(schemas["StudyDetail"]["properties"])
    # how to authenticate: a bearer token or the session cookie, on everything but the
    # login and the health check
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "session_cookie"}
    assert doc["paths"]["/api/studies"]["get"]["security"] == [{"bearer": []}, {"session_cookie": []}]
    assert "security" not in doc["paths"]["/api/auth/login"]["post"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    # pages, static files and the schema itself are not API operations
    assert not any(p.startswith(("/worklist", "/viewer", "/static", "/openapi")) for p in doc["paths"])


def _wait_scored(c, headers, ids, timeout=180.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = [c.get(f"/api/studies/{i}", headers=headers).json()["status"] for i in ids]
        if all(g in ("scored", "failed") for g in got):
            return
        time.sleep(0.1)
    raise AssertionError(f"not scored in time: {got}")


def test_every_json_answer_validates_against_its_schema(service_app, tmp_path: Path):
    app, api, _ = service_app
    c = api.client
    admin, r1 = api.login("admin"), api.login("r1")
    check = Checker(c.get("/openapi.json", headers=admin).json())

    check(c.get("/healthz"), "/healthz")
    check(c.post("/api/auth/login", json={"username": "r2", "password": "correct horse battery", "bearer": True}),
          "/api/auth/login")
    cookie_login = c.post("/api/auth/login", json={"username": "r2", "password": "correct horse battery"})
    body = check(cookie_login, "/api/auth/login")
    assert "token" not in body and body["csrf_token"]  # fields left out stay out (not null)
    csrf = body["csrf_token"]
    check(c.get("/api/auth/me"), "/api/auth/me")
    check(c.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}), "/api/auth/logout")
    c.cookies.clear()

    ids = []
    for k in range(2):
        _uid, paths = write_study(tmp_path / f"s{k}", patient=40 + k, seed=k)
        ids += check(upload(c, admin, paths), "/api/studies", status=202)["study_ids"]
    _wait_scored(c, admin, ids)
    for who in (admin, r1):
        wl = check(c.get("/api/studies", headers=who), "/api/studies")
        assert wl["total"] == 2
        st = check(c.get(f"/api/studies/{ids[0]}", headers=who), "/api/studies/{study_id}")
    assert "truth" not in st  # a reader's view leaves the admin-only fields out
    assert "attempts" in check(c.get(f"/api/studies/{ids[0]}", headers=admin), "/api/studies/{study_id}")
    im = st["hanging"]["RCC"]
    check(c.get(f"/api/images/{im}/info", headers=r1), "/api/images/{image_id}/info")
    check(c.patch(f"/api/studies/{ids[0]}", json={"reading_status": "read"}, headers=r1), "/api/studies/{study_id}")
    for sid, truth in zip(ids, (1, 0), strict=True):
        check(c.patch(f"/api/studies/{sid}", json={"truth": truth}, headers=admin), "/api/studies/{study_id}")
    check(c.get("/api/queue", headers=r1), "/api/queue")

    # accounts and the reader study
    check(c.get("/api/admin/users", headers=admin), "/api/admin/users")
    new = check(c.post("/api/admin/users", json={"username": "r9", "password": "long enough pw"}, headers=admin),
                "/api/admin/users", status=201)
    check(c.patch(f"/api/admin/users/{new['id']}", json={"active": False}, headers=admin), "/api/admin/users/{user_id}")
    check(c.post("/api/admin/reader-study", json={"study_ids": [ids[1]], "seed": 0}, headers=admin),
          "/api/admin/reader-study")
    cases = check(c.get("/api/reader/cases", headers=r1), "/api/reader/cases")
    cid = cases["next_case_id"]
    case = check(c.get(f"/api/reader/cases/{cid}", headers=r1), "/api/reader/cases/{case_id}")
    assert case["study"]["ai_visible"] is False and "patient_id" not in case["study"]
    check(c.put(f"/api/reader/cases/{cid}/unaided", json={"score": 40, "birads": 3}, headers=r1),
          "/api/reader/cases/{case_id}/unaided")
    check(c.post(f"/api/reader/cases/{cid}/start-aided", headers=r1), "/api/reader/cases/{case_id}/start-aided")
    check(c.put(f"/api/reader/cases/{cid}/aided", json={"score": 55, "birads": 4, "heatmap_acceptable": True},
                headers=r1), "/api/reader/cases/{case_id}/aided")
    case = check(c.get(f"/api/reader/cases/{cid}", headers=r1), "/api/reader/cases/{case_id}")
    assert case["study"]["ai_visible"] is True and case["reads"]["aided"]["birads"] == 4
    check(c.get("/api/admin/reader-study/progress", headers=admin), "/api/admin/reader-study/progress")
    export = c.get("/api/admin/reader-study/export?format=json", headers=admin)
    schema = {**check.schema("/api/admin/reader-study/export", "get", 200), "components": check.components}
    jsonschema.Draft202012Validator(schema).validate(export.json())
    assert len(export.json()["rows"]) == 2

    # the admin's last changes
    check(c.post(f"/api/studies/{ids[0]}/rescore", headers=admin), "/api/studies/{study_id}/rescore", status=202)
    _wait_scored(c, admin, [ids[0]])
    check(c.delete(f"/api/studies/{ids[0]}", headers=admin), "/api/studies/{study_id}")

    # every JSON operation was exercised, except the PACS pull (no PACS here: see
    # test_serve_orthanc, which checks its answer against the schema)
    ops = {(m.lower(), r.path) for r in _json_routes(app) for m in r.methods}
    assert ops - check.checked == {("post", "/api/pacs/pull")}


def test_a_schema_violation_is_caught(service_app):
    """The checker is strict: an undeclared field or a wrong type fails validation."""
    _app, api, _ = service_app
    doc = api.client.get("/openapi.json", headers=api.login("admin")).json()
    check = Checker(doc)
    schema = {**check.schema("/api/queue", "get", 200), "components": check.components}
    v = jsonschema.Draft202012Validator(schema)
    v.validate({"counts": {"scored": 1}, "worker": "running"})
    for bad in ({"counts": {}, "worker": "running", "extra": 1}, {"counts": {}, "worker": "busy"}, {"counts": {}}):
        with pytest.raises(jsonschema.ValidationError):
            v.validate(bad)
