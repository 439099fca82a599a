"""A watched folder: DICOM files dropped into it are ingested and queued.

The folder is polled (no inotify dependency). A file is taken once its size and
modification time have not changed for ``settle_s`` seconds (so half-copied files are
left alone); all files settled in one poll are ingested together (a study's four views
arrive as one study). Accepted files move to ``.processed/``, rejected ones to
``.rejected/`` with a ``.reason.txt`` beside them, so nothing is read twice and nothing
is silently dropped.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("mammolens.serve")
_DONE = (".processed", ".rejected")


class FolderWatcher:
    """Poll ``folder`` every ``interval_s`` seconds and ingest settled files."""

    def __init__(
        self,
        folder: str | Path,
        ingest: Callable[..., Any],
        *,
        interval_s: float = 2.0,
        settle_s: float = 1.0,
        max_batch: int = 256,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ingest = ingest
        self.interval_s = interval_s
        self.settle_s = settle_s
        self.max_batch = max_batch
        self._seen: dict[Path, tuple[int, float, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _candidates(self) -> list[Path]:
        out = []
        for p in self.folder.rglob("*"):
            rel = p.relative_to(self.folder)
            if rel.parts and rel.parts[0] in _DONE:
                continue
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".part"):
                out.append(p)
        return sorted(out)

    def poll_once(self) -> int:
        """One scan; returns the number of files ingested (accepted or rejected)."""
        now = time.monotonic()
        ready = []
        current = set()
        for p in self._candidates():
            current.add(p)
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            sig = (st.st_size, st.st_mtime)
            prev = self._seen.get(p)
            if prev is None or (prev[0], prev[1]) != sig:
                self._seen[p] = (sig[0], sig[1], now)
            elif now - prev[2] >= self.settle_s:
                ready.append(p)
        for p in list(self._seen):
            if p not in current:
                del self._seen[p]
        ready = ready[: self.max_batch]
        if not ready:
            return 0
        blobs = []
        for p in ready:
            try:
                blobs.append((str(p.relative_to(self.folder)), p.read_bytes()))
            except OSError as e:
                log.warning("watch: cannot read a file (%s)", type(e).__name__)
        result = self.ingest(blobs, source="watch")
        rejected = {r.path: r.reason for r in result.qc.rejected}
        for p in ready:
            rel = str(p.relative_to(self.folder))
            dest_root = self.folder / (".rejected" if rel in rejected else ".processed")
            dest = dest_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), dest)
            if rel in rejected:
                dest.with_name(dest.name + ".reason.txt").write_text(rejected[rel] + "\n", encoding="utf-8")
            self._seen.pop(p, None)
        log.info("watch: %d file(s) taken, %d rejected", len(ready), len(rejected))
        return len(ready)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # noqa: BLE001 - keep watching
                log.error("watch: %s", type(e).__name__)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mammolens-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
