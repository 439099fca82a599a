"""The service object: :class:`ServeSettings` (the options of ``mammolens serve``) and
:class:`Service`, everything the routes need (database, file store, session signer,
login throttle, scorer, worker, render cache, optional PACS client and watched folder).

One :class:`Service` is built per app by :func:`mammolens.serve.app.create_app` and
handed to the routes by the :func:`mammolens.serve.deps.get_service` dependency.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mammolens.errors import ConfigError
from mammolens.serve.auth import LoginThrottle, TokenSigner, secret_key_from_env
from mammolens.serve.db import Database
from mammolens.serve.render import RenderCache
from mammolens.serve.scoring import IsolatedScorer, PredictorScorer, Scorer
from mammolens.serve.storage import Storage
from mammolens.serve.worker import Worker

log = logging.getLogger("mammolens.serve")


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

    @property
    def worker_state(self) -> str:
        """``off`` (no model), ``running`` or ``stopped``."""
        if self.worker is None:
            return "off"
        return "running" if self.worker.alive else "stopped"
