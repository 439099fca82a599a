"""``/healthz`` (liveness, no authentication) and ``/openapi.json`` (the API's schema, for
signed-in users: like every other endpoint but the health check and the login page)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mammolens import __version__
from mammolens.serve import queries
from mammolens.serve.deps import ServiceDep, SignedIn
from mammolens.serve.schemas import Health

router = APIRouter(tags=["system"])


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "the database does not answer"}},
)
def healthz(svc: ServiceDep) -> JSONResponse:
    """Liveness: no authentication, no data. 503 when the database does not answer."""
    ok = True
    try:
        with svc.db.session() as s:
            queries.ping(s)
    except Exception:  # noqa: BLE001
        ok = False
    body = Health(status="ok" if ok else "degraded", db=ok, worker=svc.worker_state, version=__version__)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _user: SignedIn) -> JSONResponse:
    """The OpenAPI 3.1 schema of the HTTP API (request bodies and response models)."""
    return JSONResponse(request.app.openapi())
