"""The scoring loop of ``predict``: decode (sandboxed, prefetched), preprocess, run the
model in batches, write heatmaps and overlays; rows and QC issues come back in chunks.

Used by :func:`mammolens.predict.predict` and :meth:`mammolens.predict.Predictor.predict_files`;
it takes a predictor object and imports neither (no import circle).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammolens.errors import InputError, MammolensError
from mammolens.predict.table import QC_STAGE
from mammolens.qc import QCIssue


@dataclass
class FileItem:
    """One image to score."""

    image_id: str
    path: str
    patient_id: str = ""
    study_id: str = ""
    laterality: str = ""
    view: str = ""
    source: str = "file"  # "file" (decode + preprocess) or "cache"
    from_header: bool = True  # fill ids from the DICOM header when reading

    @classmethod
    def from_path(cls, path: str | Path) -> FileItem:
        p = Path(path)
        return cls(image_id=p.stem, path=str(p), patient_id=p.stem, study_id=p.stem)


@dataclass
class Chunk:
    rows: list[dict[str, Any]] = field(default_factory=list)
    qc: list[QCIssue] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)


def _overlay_base(predictor: Any, item: FileItem, img: np.ndarray, tf: Any, orig: np.ndarray | None) -> np.ndarray:
    """The grey image an overlay is drawn on, always in the ORIGINAL geometry and orientation.

    A cached image (cropped, flipped, scaled) is replaced by its source file, read as
    predict would read it; when that is unreadable, the cached image is mapped back with
    the transform (un-pad, un-scale, un-flip, un-crop; black outside the breast crop), so
    a right breast never appears mirrored.
    """
    if orig is not None and orig.shape == (tf.orig_h, tf.orig_w):
        return orig
    if item.source == "cache" and item.path and Path(item.path).is_file():
        try:
            from mammolens.io.images import read_image

            px = np.asarray(read_image(item.path, voi=predictor.settings.window).pixels, dtype=np.float32)
            if px.shape == (tf.orig_h, tf.orig_w):
                return px
        except (MammolensError, ValueError, OSError):
            pass
    return tf.inverse_array(img, interpolation="linear")


def _safe(image_id: str) -> str:
    from mammolens.data.cache import safe_name

    return safe_name(image_id)


def _fill_from_header(item: FileItem, meta: dict[str, Any]) -> None:
    if item.from_header and meta.get("sop_instance_uid"):
        item.image_id = str(meta["sop_instance_uid"])
        item.patient_id = str(meta.get("patient_id") or item.patient_id)
        item.study_id = str(meta.get("study_id") or item.study_id)
        item.laterality = str(meta.get("laterality") or item.laterality)
        item.view = str(meta.get("view") or item.view)


def overlay_base(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """The original image shrunk as :func:`~mammolens.explain.heatmaps.overlay_png` shrinks it.

    Done where the image is decoded, so only the small base crosses to the writer (not
    the full-field original); the overlay is the same pixels as drawing on the original.
    """
    img = np.asarray(pixels, dtype=np.float32)
    if max_side and max(img.shape) > max_side:
        import cv2

        f = max_side / max(img.shape)
        size = (max(1, int(round(img.shape[1] * f))), max(1, int(round(img.shape[0] * f))))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img


@dataclass
class _DecodeTask:
    """What a decode worker needs (picklable): the item, the run's settings, the image size."""

    item: FileItem
    settings: dict[str, Any]
    image_size: tuple[int, int]
    overlay_max_side: int | None  # None: no overlay base wanted

    @property
    def path(self) -> str:  # the file named in the sandbox's InputError
        return self.item.path


def _check_image(path: str, img: np.ndarray, image_size: tuple[int, int]) -> None:
    if tuple(img.shape) != tuple(image_size):
        raise InputError(path, f"preprocessed size {img.shape} differs from the model's {image_size}")
    if not np.isfinite(img).all():
        raise InputError(path, "image has non-finite values after preprocessing")


def _decode(task: _DecodeTask) -> tuple[FileItem, np.ndarray, Any, np.ndarray | None]:
    """Read + preprocess one image file (in a sandbox worker or in process); raises ``InputError``."""
    from mammolens.data.preprocess import PreprocessSettings, preprocess_image
    from mammolens.io.images import read_image

    item = task.item
    try:
        settings = PreprocessSettings.model_validate(task.settings)
        loaded = read_image(item.path, voi=settings.window)
        _fill_from_header(item, loaded.meta or {})
        pre = preprocess_image(loaded.pixels, settings, laterality=item.laterality or None)
        _check_image(item.path, pre.image, task.image_size)
        tf = pre.transform
        base = None
        if task.overlay_max_side is not None and tuple(np.shape(loaded.pixels)) == (tf.orig_h, tf.orig_w):
            base = overlay_base(loaded.pixels, task.overlay_max_side)
        return item, np.ascontiguousarray(pre.image, dtype=np.float32), tf, base
    except InputError:
        raise
    except (MammolensError, ValueError, OSError) as e:
        raise InputError(item.path, str(e)) from None


def _worker_init() -> None:
    """Decode workers use one thread each: the model's threads keep the other cores.

    The preprocessing modules are imported here, at start-up (which
    :func:`start_decode_pool` overlaps with loading the model), not on the first image.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - a dependency
        pass
    import mammolens.data.preprocess  # noqa: F401


def start_decode_pool(workers: int) -> Any:
    """``workers`` crash-safe decode processes for :func:`score_items`, started now.

    Starting them takes seconds (a fresh interpreter, its imports); a caller that starts
    the pool before loading the model overlaps the two, and one that scores several
    batches of files (a benchmark, a long-running caller) starts it once and passes it to
    every call. The caller closes it (``pool.close()``, or ``with``).
    """
    from mammolens.io.sandbox import IsolatedPool

    return IsolatedPool(max(1, int(workers)), _decode, initializer=_worker_init).start()


_DONE = object()


class _Prefetch:
    """Run an iterator in a background thread, ``depth`` results ahead of the consumer.

    The decode workers keep working while the model runs (the pool's generator only
    submits new items when it is advanced); ``depth`` bounds the decoded images held, so
    memory stays flat in the number of inputs.
    """

    def __init__(self, make_iter: Any, depth: int) -> None:
        import queue
        import threading

        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._make_iter = make_iter
        self._thread = threading.Thread(target=self._run, name="mammolens-decode", daemon=True)
        self._thread.start()

    def _put(self, x: Any) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(x, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            it = self._make_iter()
            try:
                for x in it:
                    if not self._put(("ok", x)):
                        break
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(("raise", e))
        self._put(("done", _DONE))

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                kind, x = self._q.get()
                if kind == "done":
                    return
                if kind == "raise":
                    raise x
                yield x
        finally:
            self._stop.set()
            self._thread.join(timeout=60)


def _load_stream(
    predictor: Any, items: list[FileItem], cache: Any, workers: int, want_base: bool, pool: Any = None
) -> Iterator[tuple[FileItem, Any]]:
    """Yield ``(item, (img, tf, base))`` or ``(item, InputError)`` for every item.

    Cache items are read here; image files are decoded and preprocessed by ``workers``
    crash-safe processes (:class:`~mammolens.io.sandbox.IsolatedPool`; ``pool`` when
    given, left open), in completion order, or in this process when ``workers`` is 0
    and no pool is given.
    """
    settings = predictor.settings.model_dump(mode="json")
    max_side = predictor.config.predict.overlay_max_side if want_base else None
    files: list[_DecodeTask] = []
    for item in items:
        if item.source == "cache":
            try:
                img, _mask, tf = cache.load(item.image_id)
                _check_image(item.path, img, predictor.image_size)
                yield item, (img, tf, None)  # the writer finds the overlay's base
            except (MammolensError, ValueError, OSError) as e:
                yield item, (e if isinstance(e, InputError) else InputError(item.path, str(e)))
        else:
            files.append(_DecodeTask(item, settings, tuple(predictor.image_size), max_side))
    if not files:
        return
    if pool is not None:
        yield from _decoded_by(pool, files)
        return
    if workers <= 0:
        for t in files:
            try:
                it, img, tf, base = _decode(t)
                yield it, (img, tf, base)
            except InputError as e:
                yield t.item, e
        return
    from mammolens.io.sandbox import IsolatedPool

    with IsolatedPool(min(workers, len(files)), _decode, initializer=_worker_init) as own:
        yield from _decoded_by(own, files)


def _decoded_by(pool: Any, files: list[_DecodeTask]) -> Iterator[tuple[FileItem, Any]]:
    """``(item, (img, tf, base))`` or ``(item, InputError)`` from a pool of :func:`_decode`."""
    for t, res in pool.map_unordered(files):
        if isinstance(res, InputError):
            yield t.item, res
        else:
            it, img, tf, base = res
            yield it, (img, tf, base)


def _write_outputs(
    predictor: Any,
    item: FileItem,
    hdir: Path,
    maps: dict[str, np.ndarray],
    tf: Any,
    img: np.ndarray,
    base: np.ndarray | None,
    kind: str,
    max_side: int,
    top_k: int,
) -> tuple[str, str, list[dict[str, Any]]]:
    """Save one image's heatmaps (.npz), overlay (.png) and top regions (runs in the writer thread)."""

    from mammolens.data.heatmap_io import save_heatmaps, top_regions
    from mammolens.explain.heatmaps import overlay_png

    name = _safe(item.image_id)
    heat = str(save_heatmaps(hdir / f"{name}.npz", maps, tf))
    used = kind if kind in maps else "localization"
    hm = maps[used]
    if base is not None and base.shape != (tf.orig_h, tf.orig_w):
        # the decoder shrank the original as overlay_png would: map the heatmap straight
        # onto that size (not onto the full-field original and down again)
        hm_img = tf.inverse_array(hm, shape=base.shape)
    else:
        hm_img = tf.inverse_array(hm)
        base = _overlay_base(predictor, item, img, tf, base)
    over = str(overlay_png(hdir / f"{name}.png", base, hm_img, max_side=max_side))
    regions = [{"image_id": item.image_id, **reg, "kind": used} for reg in top_regions(hm, top_k, transform=tf)]
    return heat, over, regions


def score_items(
    predictor: Any,
    items: list[FileItem],
    *,
    cache: Any = None,
    heatmaps_dir: str | Path | None = None,
    batch_size: int = 8,
    gradcam: bool | None = None,
    on_item: Any = None,
    top_k: int = 3,
    workers: int = 0,
    pool: Any = None,
) -> Iterator[Chunk]:
    """Score ``items`` in chunks of ``batch_size``; yield each chunk's rows and QC issues.

    With ``heatmaps_dir``, also the ``top_k`` highest-scoring regions of each image's
    overlay map (boxes in original pixel coordinates; :func:`~mammolens.data.heatmap_io.top_regions`).

    Three stages overlap: decoding (``workers`` sandboxed processes, fed ahead of the
    model by a prefetch thread), the model (this thread), and writing heatmaps, overlays
    and regions (one writer thread). A chunk is yielded once its files are written, so a
    row in the table always has its heatmap on disk. Rows come in completion order when
    ``workers`` > 0. ``pool``: started decode workers (:func:`start_decode_pool`) to use
    instead of starting ``workers`` new ones; the caller closes it.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    # absolute: the predictions table is read from other folders (evaluate resolves relative
    # paths against the table's own folder, which a CWD-relative path would miss)
    hdir = Path(heatmaps_dir).resolve() if heatmaps_dir else None
    kind = predictor.config.predict.overlay_kind
    benign = bool(getattr(predictor, "has_benign", False))
    max_side = predictor.config.predict.overlay_max_side
    if hdir is not None:
        hdir.mkdir(parents=True, exist_ok=True)
    want_base = hdir is not None
    stream = _Prefetch(lambda: _load_stream(predictor, items, cache, workers, want_base, pool), depth=max(2, batch_size + workers))
    writer = ThreadPoolExecutor(1, thread_name_prefix="mammolens-write") if hdir is not None else None
    pending: deque[Chunk] = deque()

    def finished(chunk: Chunk) -> Chunk:
        rows = []
        for r in chunk.rows:
            if isinstance(r, tuple):  # (row, future of (heatmap, overlay, regions))
                row, fut = r
                row["heatmap"], row["overlay"], regions = fut.result()
                chunk.regions.extend(regions)
                r = row
            rows.append(r)
        chunk.rows = rows
        return chunk

    def run_batch(batch: list[tuple[FileItem, Any]]) -> Chunk:
        chunk = Chunk()
        good = []
        for item, res in batch:
            if isinstance(res, InputError):
                chunk.qc.append(QCIssue(QC_STAGE, "reject", item.path, res.reason, item.image_id))
            else:
                good.append((item, *res))
            if on_item is not None:
                on_item()
        if good:
            results = predictor.predict_arrays([g[1] for g in good], heatmaps=hdir is not None, gradcam=gradcam)
            for (item, img, tf, base), res in zip(good, results, strict=True):
                row: dict[str, Any] = {
                    "image_id": item.image_id,
                    "patient_id": item.patient_id,
                    "study_id": item.study_id,
                    "laterality": item.laterality,
                    "view": item.view,
                    "score": res.score,
                    "heatmap": "",
                    "overlay": "",
                    "model": predictor.name,
                    "path": item.path,
                    "logit": res.logit,
                }
                if benign:
                    row["benign_score"] = res.benign_score if res.benign_score is not None else np.nan
                    row["benign_logit"] = res.benign_logit
                if writer is not None and hdir is not None:
                    fut: Future[tuple[str, str, list[dict[str, Any]]]] = writer.submit(
                        _write_outputs, predictor, item, hdir, res.maps, tf, img, base, kind, max_side, top_k
                    )
                    chunk.rows.append((row, fut))  # type: ignore[arg-type]
                else:
                    chunk.rows.append(row)
        return chunk

    try:
        batch: list[tuple[FileItem, Any]] = []
        for rec in stream:
            batch.append(rec)
            if len(batch) >= batch_size:
                pending.append(run_batch(batch))
                batch = []
                # at most one chunk being written while the next is computed: bounded memory
                while len(pending) > 1:
                    yield finished(pending.popleft())
        if batch:
            pending.append(run_batch(batch))
        while pending:
            yield finished(pending.popleft())
    finally:
        if writer is not None:
            writer.shutdown(wait=True)
