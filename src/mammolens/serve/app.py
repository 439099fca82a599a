"""The FastAPI application: :func:`create_app` builds it from :class:`ServeSettings`.

The app owns a :class:`~mammolens.serve.service.Service` (database, file store, session
signer, scorer, worker, optional PACS client and watched folder), started and stopped
with the app's lifespan. The routes live in ``serve/routes`` (one router per area), get
what they need through the dependencies of ``serve/deps.py``, answer with the models of
``serve/schemas.py`` and query the database through ``serve/queries.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from mammolens import __version__
from mammolens.serve.scoring import Scorer
from mammolens.serve.service import ServeSettings, Service

__all__ = ["ServeSettings", "Service", "create_app"]

log = logging.getLogger("mammolens.serve")
_HERE = Path(__file__).resolve().parent


_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
}


def _access_log_middleware(app: FastAPI) -> None:
    """Log method, path (never the query string: it may hold identifiers), status, time;
    add the security headers to every response, a 500 included."""
    access = logging.getLogger("mammolens.serve.access")

    @app.middleware("http")
    async def _log(request: Request, call_next: Callable):
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as e:  # noqa: BLE001 - an unhandled error: a plain 500 with the headers
            # the type only: a message or traceback may quote request data (identifiers)
            log.error("unhandled %s in %s %s", type(e).__name__, request.method, request.url.path)
            response = JSONResponse({"detail": "internal server error"}, status_code=500)
        access.info(
            "%s %s %d %.0fms", request.method, request.url.path, response.status_code,
            (time.perf_counter() - t0) * 1000,
        )
        for k, v in _SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _json_safe(x):
    """``x`` with non-finite floats as strings (JSON has no NaN / Infinity)."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def _validation_handler(app: FastAPI) -> None:
    """422 for invalid requests, also when the offending value is NaN or Infinity (the
    default handler echoes the value and fails to encode it: a 500)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def create_app(settings: ServeSettings, *, scorer: Scorer | None = None, start: bool = True) -> FastAPI:
    """Build the app. ``scorer`` overrides the model in ``settings`` (tests, custom models);
    ``start=False`` does not start the worker and watcher with the lifespan."""
    svc = Service(settings, scorer=scorer)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if start:
            svc.start()
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(
        title="mammolens",
        version=__version__,
        summary="Reading-room service of mammolens: worklist, viewer, reader studies (research use only)",
        lifespan=lifespan,
        # no interactive docs (their pages load scripts from a CDN, which the CSP refuses);
        # the schema is served to signed-in users by routes/system.py
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.svc = svc
    _access_log_middleware(app)
    _validation_handler(app)

    from mammolens.serve.routes import ROUTERS

    for r in ROUTERS:
        app.include_router(r)
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    return app
