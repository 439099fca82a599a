"""Fixtures of the service tests: the app (SQLite and PostgreSQL) and a PostgreSQL cluster.

The PostgreSQL fixture ``initdb``s a throw-away cluster with the Debian binaries under
``/usr/lib/postgresql/*/bin`` (as the ``postgres`` user when the tests run as root) on a
free loopback port, and removes it afterwards. Without the binaries the PostgreSQL
variants are skipped, unless ``MAMMOLENS_REQUIRE_SERVICES=1`` (then they fail).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # serve_fixtures helpers

from serve_fixtures import PASSWORD, SECRET, PixelScorer, free_port, skip_or_fail  # noqa: E402

# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(cands[-1]).parent if cands else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on loopback; yields a SQLAlchemy URL."""
    bindir = _pg_bin()
    if bindir is None:
        skip_or_fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    run_as: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="mammolens-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            skip_or_fail("running as root and no 'postgres' user to run the server")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = tmp / "data"
    port = free_port()
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "mammolens", "--auth=trust",
         "-E", "UTF8", "--no-locale"],
        check=True, capture_output=True,
    )
    proc = subprocess.Popen(
        [*run_as, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
         "-k", str(tmp), "-c", "fsync=off", "-c", "max_connections=100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import psycopg

        end = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=mammolens dbname=postgres", autocommit=True) as c:
                    c.execute("CREATE DATABASE mammolens_test")
                break
            except psycopg.OperationalError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield f"postgresql+psycopg://mammolens@127.0.0.1:{port}/mammolens_test"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def fresh_pg(postgres_url: str) -> Iterator[str]:
    """A clean database in the session cluster (one per test)."""
    import psycopg

    base, _db = postgres_url.rsplit("/", 1)
    name = f"t_{os.getpid()}_{time.monotonic_ns()}"
    conninfo = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- app


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'serve.db'}"
    return request.getfixturevalue("fresh_pg")


class Api:
    """A TestClient with helpers to log in (cookie + CSRF, or bearer)."""

    def __init__(self, client) -> None:
        self.client = client

    def login(self, username: str, password: str = PASSWORD) -> dict:
        r = self.client.post("/api/auth/login", json={"username": username, "password": password, "bearer": True})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def service_app(tmp_path: Path, db_url: str):
    """(app, TestClient wrapper, scorer) with an admin 'admin' and readers 'r1', 'r2'."""
    from fastapi.testclient import TestClient

    from mammolens.serve.app import ServeSettings, create_app
    from mammolens.serve.auth import create_user

    scorer = PixelScorer()
    settings = ServeSettings(
        data_dir=tmp_path / "data", db_url=db_url, operating_point=0.3, secret_key=SECRET,
        max_upload_bytes=2_000_000, max_upload_files=16, dicom_out=False,
    )
    app = create_app(settings, scorer=scorer)
    svc = app.state.svc
    with svc.db.session() as s:
        create_user(s, "admin", PASSWORD, role="admin")
        create_user(s, "r1", PASSWORD, role="reader")
        create_user(s, "r2", PASSWORD, role="reader")
    with TestClient(app) as client:
        yield app, Api(client), scorer


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """An untrained attention_tiny run folder (small input, no Grad-CAM: fast on CPU)."""
    from mammolens.serve.scoring import write_untrained_run

    return write_untrained_run(
        tmp_path_factory.mktemp("runs") / "tiny", preset="tiny", image_size=(128, 64),
        overrides={"predict.gradcam": False},
    )


@pytest.fixture
def model_app(tmp_path: Path, tiny_run: Path):
    """The service with the real (untrained) tiny model, DICOM outputs on, a watched folder."""
    from fastapi.testclient import TestClient

    from mammolens.serve.app import ServeSettings, create_app
    from mammolens.serve.auth import create_user

    settings = ServeSettings(
        model=tiny_run, data_dir=tmp_path / "data", secret_key=SECRET, operating_point=0.5,
        watch_dir=tmp_path / "inbox", watch_interval_s=0.3,
    )
    app = create_app(settings)
    with app.state.svc.db.session() as s:
        create_user(s, "admin", PASSWORD, role="admin")
        create_user(s, "r1", PASSWORD, role="reader")
    with TestClient(app) as client:
        yield app, Api(client)


# --------------------------------------------------------------------------- Orthanc

ORTHANC_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")


def _orthanc() -> tuple[str | None, str | None]:
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    plugin = None
    for d in ORTHANC_PLUGIN_DIRS:
        cands = sorted(glob.glob(f"{d}/libOrthancDicomWeb.so*"))
        if cands:
            plugin = cands[0]
            break
    return exe, plugin


@pytest.fixture(scope="session")
def orthanc_url(tmp_path_factory) -> Iterator[str]:
    """A private Orthanc with the DICOMweb plugin on loopback; yields its DICOMweb root URL."""
    import json

    import httpx

    exe, plugin = _orthanc()
    if exe is None or plugin is None:
        skip_or_fail("Orthanc and its DICOMweb plugin not installed (apt-get install orthanc orthanc-dicomweb)")
    tmp = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    cfg = {
        "Name": "mammolens-test",
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,  # loopback clients only
        "AuthenticationEnabled": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "StableAge": 1,
        "ConcurrentJobs": 1,
    }
    cfg = {k: v for k, v in cfg.items() if v is not None}
    (tmp / "orthanc.json").write_text(json.dumps(cfg), encoding="utf-8")
    log = (tmp / "orthanc.log").open("w")
    proc = subprocess.Popen([exe, str(tmp / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/dicom-web/studies", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"Orthanc did not start: {(tmp / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield f"{base}/dicom-web"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
