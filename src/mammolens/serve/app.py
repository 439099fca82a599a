"""The FastAPI application: :func:`create_app` builds it from :class:`ServeSettings`.

The app owns a :class:`Service` (database, file store, session signer, scorer, worker,
optional PACS client and watched folder), started and stopped with the app's lifespan.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from mammolens import __version__
from mammolens.errors import ConfigError
from mammolens.serve.auth import LoginThrottle, TokenSigner, secret_key_from_env
from mammolens.serve.db import Database
from mammolens.serve.render import RenderCache
from mammolens.serve.scoring import IsolatedScorer, PredictorScorer, Scorer
from mammolens.serve.storage import Storage
from mammolens.serve.worker import Worker

log = logging.getLogger("mammolens.serve")
_HERE = Path(__file__).resolve().parent


@dataclass
class ServeSettings:
    """Options of ``mammolens serve`` (see docs/serve.md).

    Attributes
    ----------
    model
        Run folder or checkpoint scored with :func:`mammolens.predict.load_predictor`.
    data_dir
        Folder for the embedded database, stored DICOM, heatmaps and outputs.
    db_url
        SQLAlchemy URL; default ``sqlite:///DATA_DIR/mammolens.db``.
    pacs_url
        DICOMweb base URL (QIDO-RS/WADO-RS/STOW-RS) to pull studies from and store the
        results to; ``None``: no PACS.
    operating_point
        Exam-score threshold above which a study is flagged on the worklist.
    watch_dir
        Folder watched for new DICOM files (``None``: off).
    max_upload_bytes, max_upload_files
        Limits of one upload request.
    max_image_pixels
        Largest image accepted (rows x columns, decoded); larger ones are refused at
        upload, before anything is decoded.
    render_cache_mb
        Memory for decoded images kept for the viewer (least recently used first out).
    worker_threads, max_attempts
        Scoring threads; attempts before a study is marked ``failed``.
    score_timeout_s
        Seconds one study may take in its scoring process before it is killed.
    gradcam
        Also compute Grad-CAM maps (a backward pass per image; the viewer shows the
        localisation map).
    dicom_out, store_to_pacs
        Write SR/heatmap objects after scoring; STOW them to the PACS.
    secret_key
        Session signing key (default: ``MAMMOLENS_SECRET_KEY`` or an ephemeral key).
    """

    model: Path | None = None
    data_dir: Path = Path("mammolens-data")
    db_url: str | None = None
    pacs_url: str | None = None
    operating_point: float = 0.5
    watch_dir: Path | None = None
    watch_interval_s: float = 2.0
    max_upload_bytes: int = 512 * 1024 * 1024
    max_upload_files: int = 64
    max_image_pixels: int = 40_000_000
    render_cache_mb: int = 512
    worker_threads: int = 1
    max_attempts: int = 3
    score_timeout_s: float = 600.0
    device: str = "cpu"
    gradcam: bool = False
    dicom_out: bool = True
    store_to_pacs: bool = True
    cookie_secure: bool = False
    secret_key: str | None = None

    def validate(self) -> ServeSettings:
        if not 0.0 <= float(self.operating_point) <= 1.0:
            raise ConfigError(f"operating point must be in [0, 1], got {self.operating_point}")
        if self.max_upload_bytes <= 0 or self.max_upload_files <= 0 or self.max_image_pixels <= 0:
            raise ConfigError("upload limits must be positive")
        if self.render_cache_mb < 0:
            raise ConfigError("the render cache size must be >= 0 MiB")
        if self.worker_threads < 1:
            raise ConfigError("worker threads must be >= 1")
        return self

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{Path(self.data_dir).resolve() / 'mammolens.db'}"


class Service:
    """Everything the routes need, built once per app."""

    def __init__(self, settings: ServeSettings, *, scorer: Scorer | None = None) -> None:
        self.settings = settings.validate()
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.database_url)
        self.storage = Storage(Path(settings.data_dir) / "store")
        self.signer = TokenSigner(settings.secret_key or secret_key_from_env())
        self.throttle = LoginThrottle()
        if scorer is None and settings.model is not None:
            scorer = PredictorScorer(settings.model, device=settings.device, gradcam=settings.gradcam)
        if scorer is not None and not isinstance(scorer, IsolatedScorer):
            # uploaded pixels are decoded (and scored) only in a process that may die
            scorer = IsolatedScorer(scorer, timeout=settings.score_timeout_s)
        self.scorer = scorer
        self.render_cache = RenderCache(settings.render_cache_mb * 1024 * 1024)
        self.pacs = None
        if settings.pacs_url:
            from mammolens.serve.dicomweb import PacsClient

            self.pacs = PacsClient(settings.pacs_url)
        self.worker: Worker | None = None
        if scorer is not None:
            self.worker = Worker(
                self.db,
                self.storage,
                scorer,
                threads=settings.worker_threads,
                max_attempts=settings.max_attempts,
                after_score=self._after_score if settings.dicom_out else None,
            )
        self.watcher = None
        if settings.watch_dir is not None:
            from mammolens.serve.watch import FolderWatcher

            self.watcher = FolderWatcher(
                settings.watch_dir, self.ingest_blobs, interval_s=settings.watch_interval_s
            )

    def ingest_blobs(self, blobs, *, source: str):
        from mammolens.serve.intake import ingest_blobs

        result = ingest_blobs(
            self.db, self.storage, blobs, source=source, max_pixels=self.settings.max_image_pixels
        )
        if result.study_ids and self.worker is not None:
            self.worker.notify()
        return result

    def _after_score(self, study_id: int) -> None:
        from mammolens.serve.outputs import write_study_outputs

        write_study_outputs(
            self.db,
            self.storage,
            study_id,
            pacs=self.pacs if self.settings.store_to_pacs else None,
            operating_point=self.settings.operating_point,
        )

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()
        if self.watcher is not None:
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.worker is not None:
            self.worker.stop()
        if isinstance(self.scorer, IsolatedScorer):
            self.scorer.close()
        self.db.dispose()


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
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.svc = svc
    _access_log_middleware(app)
    _validation_handler(app)

    from mammolens.serve.routes import admin, auth, images, pages, reader, studies

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """Liveness: no authentication, no data."""
        ok = True
        try:
            from sqlalchemy import text

            with svc.db.engine.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001
            ok = False
        worker = "off" if svc.worker is None else ("running" if svc.worker.alive else "stopped")
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "db": ok, "worker": worker, "version": __version__},
            status_code=200 if ok else 503,
        )

    for r in (auth.router, studies.router, images.router, reader.router, admin.router, pages.router):
        app.include_router(r)
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    return app
