"""``mammolens serve``: the reading-room service (worklist, viewer, reader study, DICOM out)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from mammolens.commands._common import cli_errors, console


def serve(
    model: Path = typer.Option(..., "--model", help="Run folder (or checkpoint) to score studies with."),
    db: str = typer.Option(None, "--db", help="Database URL: sqlite:///FILE or postgresql://user@host:port/db. Default: DATA/mammolens.db (SQLite)."),
    pacs: str = typer.Option(None, "--pacs", help="DICOMweb base URL of the PACS (QIDO/WADO/STOW-RS), e.g. http://127.0.0.1:8042/dicom-web."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    data: Path = typer.Option(Path("mammolens-data"), "--data", help="Folder for stored DICOM, heatmaps, outputs (and the SQLite database)."),
    watch: Path = typer.Option(None, "--watch", help="Folder to watch for new DICOM files (each study is queued when its files stop changing)."),
    operating_point: float = typer.Option(0.5, "--operating-point", min=0.0, max=1.0, help="Exam score at or above which a study is flagged."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the model (cpu, cuda, cuda:1)."),
    gradcam: bool = typer.Option(False, "--gradcam", help="Also compute Grad-CAM maps (slower; the viewer shows the localisation map)."),
    workers: int = typer.Option(1, "--workers", min=1, max=16, help="Scoring worker threads."),
    max_upload_mb: int = typer.Option(512, "--max-upload-mb", min=1, help="Largest upload request (MiB)."),
    max_image_mpx: float = typer.Option(40.0, "--max-image-mpx", min=0.01, help="Largest image accepted (megapixels, rows x columns); larger ones are refused at upload."),
    render_cache_mb: int = typer.Option(512, "--render-cache-mb", min=0, help="Memory for decoded images kept for the viewer (MiB)."),
    no_dicom_out: bool = typer.Option(False, "--no-dicom-out", help="Do not write SR / heatmap DICOM objects for scored studies."),
    no_store: bool = typer.Option(False, "--no-store", help="Write DICOM outputs but do not STOW them to the PACS."),
    cookie_secure: bool = typer.Option(False, "--cookie-secure", help="Mark the session cookie Secure (behind HTTPS)."),
    log_level: str = typer.Option("info", "--log-level", help="Log level (debug, info, warning)."),
) -> None:
    """Serve the worklist, viewer and reader study; score studies in the background.

    Accounts are made with `mammolens users add`. Set MAMMOLENS_SECRET_KEY (a random string of
    16+ characters) so sessions survive restarts.

    Example:

        mammolens users add alice --role admin --db sqlite:///mammolens-data/mammolens.db

        mammolens serve --model runs/tiny --pacs http://127.0.0.1:8042/dicom-web --port 8000
    """
    with cli_errors():
        import uvicorn

        from mammolens.serve.app import ServeSettings, create_app

        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not model.exists():
            from mammolens.errors import CheckpointError

            raise CheckpointError(f"{model}: model run or checkpoint not found")
        settings = ServeSettings(
            model=model,
            data_dir=data,
            db_url=db,
            pacs_url=pacs,
            operating_point=operating_point,
            watch_dir=watch,
            max_upload_bytes=max_upload_mb * 1024 * 1024,
            max_image_pixels=int(max_image_mpx * 1_000_000),
            render_cache_mb=render_cache_mb,
            worker_threads=workers,
            device=device,
            gradcam=gradcam,
            dicom_out=not no_dicom_out,
            store_to_pacs=not no_store,
            cookie_secure=cookie_secure,
        )
        app = create_app(settings)
        console.print(f"mammolens serve: http://{host}:{port}/  (database: {app.state.svc.db.dialect}; not for clinical use)")
        uvicorn.run(app, host=host, port=port, access_log=False, log_level=log_level.lower())
