"""The background scoring worker.

Studies are queued in the database (``status = 'queued'``); each worker thread claims
one with a conditional ``UPDATE ... WHERE status = 'queued'`` (safe with several threads
and on both SQLite and PostgreSQL), scores its images with the :class:`~.scoring.Scorer`,
stores the scores and heatmaps, marks it ``scored`` and then writes the DICOM outputs
(SR, heatmap objects) and stores them to the PACS when one is configured.

Nothing is lost across restarts: a study left in ``scoring`` by a crash is re-queued at
start-up, and a failed study is retried up to ``max_attempts`` times before it is marked
``failed`` with the reason. An attempt is counted when the study is claimed, so a study
that takes the process down every time (or is interrupted by every restart) still ends
``failed`` after ``max_attempts`` claims.

The DICOM outputs are a second durable queue on the same rows: scoring a study sets
``pacs_status = 'pending'`` in the transaction that stores the scores; a worker claims it
(``writing``), writes the SR and heatmap objects and marks it ``written`` / ``stored``
(or ``failed`` after ``max_attempts``). A crash between ``scored`` and the outputs leaves
``pending`` or ``writing``, which the next start picks up again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable

from mammolens.errors import InputError
from mammolens.serve import queries
from mammolens.serve.db import Database
from mammolens.serve.models import Study, utcnow
from mammolens.serve.scoring import Scorer, heatmap_original, heatmap_peak
from mammolens.serve.storage import Storage, digest_name
from mammolens.stats.levels import roll_up

log = logging.getLogger("mammolens.serve")


def requeue_interrupted(db: Database, *, max_attempts: int = 3) -> int:
    """Put studies left in ``scoring`` (a crash, a stop) back in the queue, and their
    interrupted DICOM outputs back to ``pending``; returns the number re-queued.

    A study that has used up its attempts is marked ``failed`` instead: when the scoring
    process died on it every time, re-queueing it would only take it down again.
    """
    with db.session() as s:
        return queries.reset_interrupted(s, max_attempts=max_attempts)


def claim_next(db: Database, *, max_attempts: int | None = None) -> int | None:
    """Atomically take the oldest queued study; ``None`` when the queue is empty.

    The claim counts an attempt (committed before scoring starts). With ``max_attempts``,
    a study that has used up its attempts is not claimed.
    """
    for _ in range(10):
        with db.session() as s:
            sid = queries.next_queued_study(s, max_attempts=max_attempts)
            if sid is None:
                return None
            if queries.claim_study(s, sid):
                return sid
    return None


def claim_outputs(db: Database, study_id: int | None = None) -> int | None:
    """Atomically take a scored study whose DICOM outputs are ``pending`` (``study_id``:
    that one only); marks it ``writing`` and counts an attempt."""
    for _ in range(10):
        with db.session() as s:
            sid = queries.next_pending_outputs(s, study_id)
            if sid is None:
                return None
            if queries.claim_study_outputs(s, sid):
                return sid
    return None


def score_study(
    db: Database,
    storage: Storage,
    scorer: Scorer,
    study_id: int,
    *,
    max_attempts: int = 3,
    outputs: bool = False,
) -> str:
    """Score one claimed study; returns its new status (scored | queued | failed).

    With ``outputs``, a scored study's DICOM outputs are queued (``pacs_status =
    'pending'``) in the same transaction as its scores.
    """
    with db.session() as s:
        imgs = queries.study_images(s, study_id)
        files = {im.id: storage.resolve("instances", im.file) for im in imgs}
        labels = {str(files[im.id]): f"image #{im.id} ({im.laterality} {im.view})".replace(" )", ")") for im in imgs}
        attempts = s.get(Study, study_id).attempts
    try:
        if not files:
            raise RuntimeError("study has no images")
        work = storage.root / "work" / f"study-{study_id}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            results = scorer.score_files(list(files.values()), work)
            if not results:
                raise RuntimeError("the model scored none of the study's images")
            scored: dict[int, dict] = {}
            for image_id, path in files.items():
                r = results.get(path)
                if r is None:
                    continue
                entry = {"score": r.score, "breast_score": r.breast_score, "exam_score": r.exam_score,
                         "heatmap_file": "", "peak_x": None, "peak_y": None}
                if r.heatmap is not None:
                    name = digest_name(f"heatmap:{study_id}:{image_id}:{time.time_ns()}", ".npz")
                    dest = storage.new_path("heatmaps", name)
                    shutil.copyfile(r.heatmap, dest)
                    arr, _ = heatmap_original(dest)
                    entry["peak_x"], entry["peak_y"] = heatmap_peak(arr)
                    entry["heatmap_file"] = name
                scored[image_id] = entry
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except Exception as e:  # noqa: BLE001 - any model/file failure becomes the study's error
        if isinstance(e, InputError) and e.path:
            # an image that cannot be decoded (or kills its decoder) alone: final, not retried
            reason = f"{labels.get(e.path, 'an image')}: {e.reason}"
            status = "failed"
        else:
            reason = e.reason if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
            status = "queued" if attempts < max_attempts else "failed"
        reason = reason.splitlines()[0][:500] if reason else type(e).__name__
        with db.session() as s:
            st = s.get(Study, study_id)
            if st is not None:
                st.status = status
                st.error = reason
                st.updated_at = utcnow()
        log.warning("worker: study #%d attempt %d failed (%s)", study_id, attempts, type(e).__name__)
        return status

    with db.session() as s:
        st = s.get(Study, study_id)
        if st is None:  # deleted while scoring
            return "deleted"
        now_stored = queries.study_images(s, study_id)
        current = {im.id for im in now_stored}
        images = [im for im in now_stored if im.id in scored]
        # the model's own roll-ups; where it gave none, the one rule of mammolens.stats.levels
        by_breast, exam_score = roll_up([(im.laterality, scored[im.id]["score"]) for im in images])
        for im in images:
            e = scored[im.id]
            old = im.heatmap_file
            im.score = e["score"]
            im.breast_score = e["breast_score"] if e["breast_score"] is not None else by_breast[im.laterality]
            im.heatmap_file = e["heatmap_file"]
            im.peak_x, im.peak_y = e["peak_x"], e["peak_y"]
            if old and old != im.heatmap_file:
                storage.delete("heatmaps", old)
        exam_scores = [e["exam_score"] for e in scored.values() if e["exam_score"] is not None]
        st.exam_score = max(exam_scores) if exam_scores else exam_score
        st.model = getattr(scorer, "name", "")[:128]
        st.error = ""
        st.scored_at = utcnow()
        st.updated_at = utcnow()
        # images that arrived while scoring: score again so none is left out
        st.status = "queued" if (current - set(files)) else "scored"
        if st.status == "scored" and outputs:
            st.pacs_status, st.output_attempts = "pending", 0
        status = st.status
    log.info("worker: study #%d %s (%d image(s))", study_id, status, len(scored))
    return status


class Worker:
    """Background threads that drain the study queue.

    Parameters
    ----------
    db, storage, scorer
        Where studies live and what scores them.
    threads
        Number of worker threads (scoring itself is serialised by the scorer).
    poll_s
        Sleep between queue polls when idle.
    after_score
        Called with the study id after a study is scored (DICOM outputs, PACS store);
        its failures are logged and recorded on the study, never lose the scores.
    """

    def __init__(
        self,
        db: Database,
        storage: Storage,
        scorer: Scorer,
        *,
        threads: int = 1,
        poll_s: float = 0.5,
        max_attempts: int = 3,
        after_score: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.storage = storage
        self.scorer = scorer
        self.n_threads = max(1, int(threads))
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.after_score = after_score
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.processed = 0

    def start(self) -> None:
        requeue_interrupted(self.db, max_attempts=self.max_attempts)
        for i in range(self.n_threads):
            t = threading.Thread(target=self._run, name=f"mammolens-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def notify(self) -> None:
        """Wake the workers (a study was queued)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def run_once(self) -> bool:
        """Claim and score one study (then write its DICOM outputs), or else write the
        outputs of one study whose outputs are pending; ``False`` when there was nothing."""
        sid = claim_next(self.db, max_attempts=self.max_attempts)
        if sid is not None:
            status = score_study(
                self.db, self.storage, self.scorer, sid,
                max_attempts=self.max_attempts, outputs=self.after_score is not None,
            )
            self.processed += 1
            if status == "scored" and self.after_score is not None:
                oid = claim_outputs(self.db, sid)
                if oid is not None:
                    self._write_outputs(oid)
            return True
        if self.after_score is None:
            return False
        oid = claim_outputs(self.db)
        if oid is None:
            return False
        self._write_outputs(oid)
        return True

    def _write_outputs(self, sid: int) -> None:
        """Run ``after_score`` for a study claimed with :func:`claim_outputs`; a failure is
        retried (``pending``) until ``max_attempts``, then ``failed``. Scores are kept."""
        try:
            self.after_score(sid)
        except Exception as e:  # noqa: BLE001
            log.warning("worker: DICOM outputs for study #%d failed (%s)", sid, type(e).__name__)
            with self.db.session() as s:
                st = s.get(Study, sid)
                if st is not None and st.pacs_status == "writing":
                    st.pacs_status = "failed" if st.output_attempts >= self.max_attempts else "pending"
            return
        with self.db.session() as s:  # the writer found nothing to write
            queries.release_outputs(s, sid)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as e:  # noqa: BLE001 - keep the thread alive (DB hiccup)
                log.error("worker: %s: %s", type(e).__name__, e)
                busy = False
                time.sleep(self.poll_s)
            if not busy:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def drain(self, timeout: float = 60.0) -> bool:
        """Block until no study is queued or scoring (tests, CLI one-shot use)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.db.session() as s:
                busy = queries.scoring_busy(s)
            if not busy:
                return True
            time.sleep(0.1)
        return False

