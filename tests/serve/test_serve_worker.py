"""Worker: claiming, retries, failure reasons, crash recovery, images arriving while scoring."""

from __future__ import annotations

from pathlib import Path

from serve_fixtures import PixelScorer, write_study

from mammolens.serve.db import Database
from mammolens.serve.intake import ingest_blobs
from mammolens.serve.models import Study
from mammolens.serve.storage import Storage
from mammolens.serve.worker import Worker, claim_next, requeue_interrupted, score_study


class FailingScorer:
    name = "failing"

    def score_files(self, paths, heatmaps_dir):
        raise RuntimeError("decoder exploded")


def _setup(tmp_path: Path, db_url: str, n_images: int = 4):
    db = Database(db_url)
    storage = Storage(tmp_path / "store")
    _uid, paths = write_study(tmp_path / "s", rows=48, cols=32)
    res = ingest_blobs(db, storage, [(p.name, p.read_bytes()) for p in paths[:n_images]])
    return db, storage, paths, res.study_ids[0]


def test_claim_is_exclusive_and_failures_are_retried_then_reported(tmp_path: Path, db_url: str):
    db, storage, _paths, sid = _setup(tmp_path, db_url)
    try:
        assert claim_next(db) == sid
        assert claim_next(db) is None  # already taken
        assert score_study(db, storage, FailingScorer(), sid, max_attempts=2) == "queued"
        assert claim_next(db) == sid
        assert score_study(db, storage, FailingScorer(), sid, max_attempts=2) == "failed"
        with db.session() as s:
            st = s.get(Study, sid)
            assert st.status == "failed" and st.attempts == 2 and "decoder exploded" in st.error
    finally:
        db.dispose()


def test_crash_recovery_and_late_images(tmp_path: Path, db_url: str):
    db, storage, paths, sid = _setup(tmp_path, db_url, n_images=2)
    try:
        assert claim_next(db) == sid  # ... and the process dies while scoring
        assert requeue_interrupted(db) == 1
        assert claim_next(db) == sid

        class LateArrivals(PixelScorer):
            """Two more views arrive while the first two are being scored."""

            def score_files(self, files, heatmaps_dir):
                if self.calls == 0:
                    ingest_blobs(db, storage, [(p.name, p.read_bytes()) for p in paths[2:]])
                return super().score_files(files, heatmaps_dir)

        assert score_study(db, storage, LateArrivals(), sid) == "queued"  # scored again for the new views
        w = Worker(db, storage, PixelScorer())
        assert w.run_once() is True
        assert w.run_once() is False
        with db.session() as s:
            st = s.get(Study, sid)
            assert st.status == "scored" and len(st.images) == 4
            assert all(im.score is not None and im.heatmap_file for im in st.images)
    finally:
        db.dispose()
