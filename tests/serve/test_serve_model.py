"""The service with the real model (an untrained attention_tiny run): scoring, heatmaps,
DICOM outputs, the watched folder and the CLI commands."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pydicom
from serve_fixtures import PASSWORD, upload, write_study

from mammolens.io.dicom_out import NOT_CLINICAL


def _wait(client, headers, sid, timeout=240.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = client.get(f"/api/studies/{sid}", headers=headers).json()
        # outputs are a queue of their own: done once they left pending / writing
        if st["status"] == "failed" or (
            st["status"] == "scored" and st["pacs_status"] not in ("", "pending", "writing")
        ):
            return st
        time.sleep(0.2)
    raise AssertionError(f"study {sid} not done: {st['status']}")


def test_real_model_scores_and_writes_dicom_outputs(model_app, tmp_path: Path):
    app, api = model_app
    c = api.client
    admin = api.login("admin")
    _uid, paths = write_study(tmp_path / "s", rows=128, cols=96)
    r = upload(c, admin, paths)
    assert r.status_code == 202, r.text
    sid = r.json()["study_ids"][0]
    st = _wait(c, admin, sid)
    assert st["status"] == "scored", st["error"]
    assert 0.0 <= st["exam_score"] <= 1.0 and st["model"] == "tiny"
    assert all(im["score"] is not None and im["has_heatmap"] for im in st["images"])
    assert st["pacs_status"] == "written"  # no PACS configured: kept in the store
    kinds = sorted(o["kind"] for o in st["outputs"])
    assert kinds == ["sc"] * 4 + ["seg"] * 4 + ["sr"]
    h = c.get(f"/api/images/{st['images'][0]['id']}/heatmap.png", headers=admin)
    assert h.status_code == 200 and h.content[:8] == b"\x89PNG\r\n\x1a\n"
    # the stored SR references the study
    svc = app.state.svc
    with svc.db.session() as s:
        from mammolens.serve.models import Output

        sr = s.query(Output).filter_by(study_id=sid, kind="sr").one()
        ds = pydicom.dcmread(svc.storage.resolve("outputs", sr.file))
    assert ds.StudyInstanceUID == _uid and NOT_CLINICAL in ds.SeriesDescription


def test_watched_folder(model_app, tmp_path: Path):
    app, api = model_app
    c = api.client
    admin = api.login("admin")
    inbox = Path(app.state.svc.settings.watch_dir)
    _uid, paths = write_study(tmp_path / "w", patient=42, rows=128, cols=96)
    (inbox / "exam1").mkdir()
    for p in paths:
        shutil.copy(p, inbox / "exam1" / p.name)
    (inbox / "readme.txt").write_text("not dicom")
    end = time.monotonic() + 240  # a busy machine: the scoring process loads torch first
    while time.monotonic() < end:
        items = c.get("/api/studies?source=watch", headers=admin).json()["items"]
        if items and items[0]["status"] == "scored":
            break
        time.sleep(0.3)
    assert items and items[0]["n_images"] == 4 and items[0]["status"] == "scored"
    assert sorted(p.name for p in (inbox / ".processed" / "exam1").iterdir()) == sorted(p.name for p in paths)
    reason = (inbox / ".rejected" / "readme.txt.reason.txt").read_text()
    assert "DICOM" in reason
    assert not (inbox / "readme.txt").exists()


def test_cli_users_and_serve_help(tmp_path: Path, tiny_run: Path, monkeypatch):
    from typer.testing import CliRunner

    from mammolens.cli import app

    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("MAMMOLENS_PASSWORD", PASSWORD)
    r = runner.invoke(app, ["users", "add", "carol", "--role", "admin", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    assert '"role": "admin"' in r.output
    r = runner.invoke(app, ["users", "add", "carol", "--db", db])
    assert r.exit_code == 1 and "already exists" in r.output
    r = runner.invoke(app, ["users", "add", "dave", "--role", "boss", "--db", db])
    assert r.exit_code == 1 and "role" in r.output
    monkeypatch.setenv("MAMMOLENS_PASSWORD", "short")
    r = runner.invoke(app, ["users", "add", "erin", "--db", db])
    assert r.exit_code == 1 and "8 characters" in r.output
    r = runner.invoke(app, ["users", "list", "--db", db, "--json"])
    assert r.exit_code == 0 and "carol" in r.output
    # a new password and disabling both end the issued sessions (token_version moves on)
    from mammolens.serve import queries
    from mammolens.serve.auth import verify_password
    from mammolens.serve.db import Database

    def carol():
        database = Database(db)
        with database.session() as s:
            u = queries.user_by_name(s, "carol")
        database.dispose()
        return u

    v0 = carol().token_version
    monkeypatch.setenv("MAMMOLENS_PASSWORD", PASSWORD + "-new")
    r = runner.invoke(app, ["users", "passwd", "carol", "--db", db])
    assert r.exit_code == 0, r.output
    u = carol()
    assert u.token_version == v0 + 1 and verify_password(u.password_hash, PASSWORD + "-new") and u.active
    r = runner.invoke(app, ["users", "disable", "carol", "--db", db])
    assert r.exit_code == 0, r.output
    u = carol()
    assert u.token_version == v0 + 2 and not u.active
    for cmd in ("passwd", "disable"):
        r = runner.invoke(app, ["users", cmd, "nobody", "--db", db])
        assert r.exit_code == 1 and "no user 'nobody'" in r.output
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--model" in r.output and "--pacs" in r.output
    r = runner.invoke(app, ["serve", "--model", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "not found" in r.output


def test_serve_command_starts_and_stops(tmp_path: Path, tiny_run: Path):
    """`mammolens serve` as a process: health check without auth, API needs auth."""
    import os
    import signal
    import subprocess
    import sys

    import httpx
    from serve_fixtures import free_port

    port = free_port()
    env = {**os.environ, "MAMMOLENS_SECRET_KEY": "cli-test-secret-0123456789"}
    exe = Path(sys.executable).with_name("mammolens")
    proc = subprocess.Popen(
        [str(exe), "serve", "--model", str(tiny_run), "--data", str(tmp_path / "d"), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        end = time.monotonic() + 240
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < end, "server did not start"
            time.sleep(0.3)
        assert r.json()["worker"] == "running"
        assert httpx.get(f"http://127.0.0.1:{port}/api/studies").status_code == 401
        assert (tmp_path / "d" / "mammolens.db").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)  # a few seconds; much longer on a machine busy with other work
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
