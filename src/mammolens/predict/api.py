"""``predict()``: a trained run + inputs -> the predictions table (+ heatmaps, overlays).

Inputs are any mix of

* manifests (``.csv`` / ``.parquet``): their images are read from ``cache`` when given
  (the fast path; it must have the run's image size), else read from ``path`` and
  preprocessed on the fly with the run's saved preprocessing settings; ``split`` keeps
  one split only;
* DICOM files, PNG/PGM/TIFF images, or folders of them (searched recursively). A DICOM
  file's ``image_id`` is its SOP Instance UID and its patient / study / laterality / view
  come from its header; another image's ``image_id``, ``patient_id`` and ``study_id``
  are its file name without extension (each file is its own exam).

Output (``OUT`` = ``PREDICTIONS.csv``), columns::

    image_id, patient_id, study_id, laterality, view,
    score         malignancy probability of the image, in [0, 1]
    breast_score  max of the image scores over the breast's views
                  (breast = patient_id, study_id, laterality)
    exam_score    max over the exam's breasts (= max over all the exam's images)
    heatmap       .npz with attention / localization / gradcam maps (empty without --heatmaps)
    overlay       PNG: the localisation map over the image (empty without --heatmaps)
    model, path, logit

plus ``PREDICTIONS_breast.csv`` (patient_id, study_id, laterality, breast_score,
n_images), ``PREDICTIONS_exam.csv`` (patient_id, study_id, exam_score, n_images) and
``qc.csv`` beside it (rejected inputs, with the reason). Images are processed in
chunks and appended to ``PREDICTIONS.partial.csv``, so memory does not grow with the
number of inputs and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.data.manifest import BREAST_KEY
from mammolens.errors import ConfigError, InputError, MammolensError
from mammolens.qc import QCIssue, QCTable

QC_STAGE = "predict"
PRED_COLUMNS = [
    "image_id",
    "patient_id",
    "study_id",
    "laterality",
    "view",
    "score",
    "breast_score",
    "exam_score",
    "heatmap",
    "overlay",
    "model",
    "path",
    "logit",
]
_STREAM_COLUMNS = [c for c in PRED_COLUMNS if c not in ("breast_score", "exam_score")]
IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".pgm", ".pnm", ".tif", ".tiff", ".ima", ""}
MANIFEST_SUFFIXES = {".csv", ".parquet", ".pq"}


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


REGION_COLUMNS = ["image_id", "rank", "score", "x0", "y0", "x1", "y1", "peak_x", "peak_y", "kind"]


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
    """Decode workers use one thread each: the model's threads keep the other cores."""
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - a dependency
        pass


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
    predictor: Any, items: list[FileItem], cache: Any, workers: int, want_base: bool
) -> Iterator[tuple[FileItem, Any]]:
    """Yield ``(item, (img, tf, base))`` or ``(item, InputError)`` for every item.

    Cache items are read here; image files are decoded and preprocessed by ``workers``
    crash-safe processes (:class:`~mammolens.io.sandbox.IsolatedPool`), in completion
    order, or in this process when ``workers`` is 0.
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
    if workers <= 0:
        for t in files:
            try:
                it, img, tf, base = _decode(t)
                yield it, (img, tf, base)
            except InputError as e:
                yield t.item, e
        return
    from mammolens.io.sandbox import IsolatedPool

    with IsolatedPool(min(workers, len(files)), _decode, initializer=_worker_init) as pool:
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
    import cv2

    from mammolens.data.heatmap_io import save_heatmaps, top_regions
    from mammolens.explain.heatmaps import overlay_png

    name = _safe(item.image_id)
    heat = str(save_heatmaps(hdir / f"{name}.npz", maps, tf))
    used = kind if kind in maps else "localization"
    hm = maps[used]
    hm_img = tf.inverse_array(hm)
    if base is not None and base.shape != (tf.orig_h, tf.orig_w):
        # the decoder shrank the original as overlay_png would: shrink the map alike
        hm_img = cv2.resize(np.asarray(hm_img, dtype=np.float32), (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    else:
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
) -> Iterator[Chunk]:
    """Score ``items`` in chunks of ``batch_size``; yield each chunk's rows and QC issues.

    With ``heatmaps_dir``, also the ``top_k`` highest-scoring regions of each image's
    overlay map (boxes in original pixel coordinates; :func:`~mammolens.data.heatmap_io.top_regions`).

    Three stages overlap: decoding (``workers`` sandboxed processes, fed ahead of the
    model by a prefetch thread), the model (this thread), and writing heatmaps, overlays
    and regions (one writer thread). A chunk is yielded once its files are written, so a
    row in the table always has its heatmap on disk. Rows come in completion order when
    ``workers`` > 0.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    # absolute: the predictions table is read from other folders (evaluate resolves relative
    # paths against the table's own folder, which a CWD-relative path would miss)
    hdir = Path(heatmaps_dir).resolve() if heatmaps_dir else None
    kind = predictor.config.predict.overlay_kind
    max_side = predictor.config.predict.overlay_max_side
    if hdir is not None:
        hdir.mkdir(parents=True, exist_ok=True)
    want_base = hdir is not None
    stream = _Prefetch(lambda: _load_stream(predictor, items, cache, workers, want_base), depth=max(2, batch_size + workers))
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


def add_contralateral(df: pd.DataFrame, *, weight: float = 0.0) -> pd.DataFrame:
    """Add ``contralateral_logit`` and, with ``weight > 0``, make ``score`` the
    contralateral-difference score ``sigmoid(logit - weight * contralateral_logit)``
    (the image's own score where the other breast has no image of the same view)."""
    from mammolens.stats.levels import contralateral_values

    df = df.copy()
    if df.empty:
        df["contralateral_logit"] = pd.Series(dtype=float)
        return df
    contra = contralateral_values(df.assign(laterality=df["laterality"].fillna("").astype(str)), value="logit")
    df["contralateral_logit"] = contra
    if weight > 0:
        z = df["logit"].to_numpy(float) - weight * contra.fillna(0.0).to_numpy(float)
        has = contra.notna().to_numpy()
        df.loc[has, "score"] = 1.0 / (1.0 + np.exp(-z[has]))
    return df


def add_rollups(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``breast_score`` (max over the breast's images) and ``exam_score`` (max over the exam).

    The roll-up rule is :func:`mammolens.stats.levels.add_level_scores`; here the key columns
    are written as text (a plain file has no laterality: ``""``) and the columns ordered.
    """
    from mammolens.stats.levels import add_level_scores

    df = df.copy()
    if df.empty:
        df["breast_score"] = pd.Series(dtype=float)
        df["exam_score"] = pd.Series(dtype=float)
        return df[[c for c in PRED_COLUMNS if c in df.columns] + [c for c in df.columns if c not in PRED_COLUMNS]]
    for c in BREAST_KEY:
        df[c] = df[c].fillna("").astype(str)
    df = add_level_scores(df, score="score", how="max")
    return df[[c for c in PRED_COLUMNS if c in df.columns] + [c for c in df.columns if c not in PRED_COLUMNS]]


def _level_rows(df: pd.DataFrame, level: str) -> pd.DataFrame:
    from mammolens.stats.levels import aggregate_scores, level_keys

    col = f"{level}_score"
    if df.empty:
        return pd.DataFrame(columns=[*level_keys(level), col, "n_images"])
    out = aggregate_scores(df, level=level, score="score", truth=None, how="max", sort=True, missing_keys="group")
    return out.rename(columns={"score": col})


def breast_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per breast: key, ``breast_score`` (max over its images) and ``n_images``."""
    return _level_rows(df, "breast")


def exam_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per exam: key, ``exam_score`` (max over its images) and ``n_images``."""
    return _level_rows(df, "exam")


def _scan_folder(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for n in sorted(names):
            if n.startswith("."):
                continue
            p = Path(root) / n
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
    return files


def collect_inputs(
    inputs: list[str | Path],
    *,
    cache: Any = None,
    split: str | None = None,
) -> tuple[list[FileItem], QCTable]:
    """Expand manifests, folders and files into :class:`FileItem` rows (+ QC for missing inputs)."""
    from mammolens.data.manifest import read_manifest

    qc = QCTable()
    items: list[FileItem] = []
    for inp in inputs:
        p = Path(inp)
        if not p.exists():
            qc.add(QC_STAGE, p, "file not found")
            continue
        if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            df = read_manifest(p)
            if split:
                df = df[df["split"] == split]
                if df.empty:
                    raise ConfigError(f"{p}: no images in split {split!r}")
            for r in df.itertuples(index=False):
                iid = str(r.image_id)
                src = "cache" if (cache is not None and iid in cache) else "file"
                if cache is not None and src == "file" and not Path(str(r.path)).exists():
                    qc.add(QC_STAGE, r.path, "not in the cache and the image file is missing", image_id=iid)
                    continue
                items.append(
                    FileItem(iid, str(r.path), str(r.patient_id), str(r.study_id), str(r.laterality), str(r.view), src, from_header=False)
                )
            continue
        files = _scan_folder(p) if p.is_dir() else [p]
        if p.is_dir() and not files:
            qc.add(QC_STAGE, p, "folder holds no image files")
        items.extend(FileItem.from_path(f) for f in files)
    # the same file given twice (e.g. a file and its folder) is scored once
    unique: dict[tuple[str, str], FileItem] = {}
    for it in items:
        key = (it.image_id, str(Path(it.path).resolve()) if it.source == "file" else it.path)
        unique.setdefault(key, it)
    items = list(unique.values())
    # unique ids for files named alike in different folders
    seen: dict[str, int] = {}
    for it in items:
        seen[it.image_id] = seen.get(it.image_id, 0) + 1
    for it in items:
        if seen[it.image_id] > 1 and it.source == "file" and it.from_header:
            h = hashlib.sha1(it.path.encode()).hexdigest()[:8]
            it.image_id = it.patient_id = it.study_id = f"{it.image_id}-{h}"
    return items, qc


def _output_paths(out: str | Path) -> dict[str, Path]:
    out = Path(out)
    if out.suffix.lower() != ".csv":
        out = out / "predictions.csv" if (out.is_dir() or out.suffix == "") else out.with_suffix(".csv")
    stem = out.with_suffix("")
    return {
        "images": out,
        "partial": Path(f"{stem}.partial.csv"),
        "breast": Path(f"{stem}_breast.csv"),
        "exam": Path(f"{stem}_exam.csv"),
        "regions": Path(f"{stem}_regions.csv"),
        "regions_partial": Path(f"{stem}_regions.partial.csv"),
        "heatmaps": Path(f"{stem}_heatmaps"),
        "qc": out.parent / "qc.csv",
    }


def predict(
    run: Any,
    inputs: list[str | Path] | str | Path,
    out: str | Path,
    *,
    heatmaps_dir: str | Path | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    split: str | None = None,
    cache: Any = None,
    gradcam: bool | None = None,
    progress: bool = True,
    resume: bool = True,
    top_k: int = 3,
    dicom_out: str | Path | None = None,
    stow: str | None = None,
    operating_point: float = 0.5,
    backend: str = "eager",
    workers: int | None = None,
) -> pd.DataFrame:
    """Score inputs with a trained run and write the prediction tables.

    Parameters
    ----------
    run
        Run folder, ``.ckpt`` file or a loaded :class:`~mammolens.predict.Predictor`.
    inputs
        Manifests, image files and/or folders (see the module docstring).
    out
        ``PREDICTIONS.csv`` (a folder gets ``predictions.csv`` inside).
    heatmaps_dir
        Write ``<image_id>.npz`` heatmaps and ``<image_id>.png`` overlays there.
    batch_size
        Images per forward pass (and per chunk appended to the CSV).
    device
        ``cpu``, ``cuda`` or ``auto``.
    split
        Keep only this split of manifest inputs.
    cache
        A cache folder (or Cache) holding the manifest's images (same image size as the
        run's training cache).
    gradcam
        Compute Grad-CAM maps (default: the run's ``predict.gradcam``).
    resume
        Continue an interrupted run from ``PREDICTIONS.partial.csv``.
    top_k
        With heatmaps: the ``top_k`` highest-scoring regions per image go to
        ``PREDICTIONS_regions.csv`` (boxes in original pixel coordinates).
    dicom_out
        Write, per study, the DICOM objects the service sends to PACS (TID 1500 SR,
        heatmap secondary captures, Segmentations) to ``dicom_out/<StudyInstanceUID>/``
        (DICOM inputs only). Needs heatmaps: without ``heatmaps_dir`` they go to
        ``PREDICTIONS_heatmaps/``.
    stow
        A DICOMweb URL: store those objects there too (STOW-RS).
    operating_point
        The score at or above which the SR asserts a finding (the service's default too).
    backend
        ``eager`` (PyTorch, the reference), ``compiled`` (``torch.compile``), ``onnx``
        (ONNX Runtime) or ``openvino`` (:mod:`mammolens.predict.backends`); an
        unavailable one falls back to eager with the reason logged. Ignored when
        ``run`` is a loaded Predictor or an export folder (which names its runtime).
    workers
        Processes decoding and preprocessing image files, overlapped with the model
        (crash-safe: :class:`mammolens.io.sandbox.IsolatedPool`); ``0`` decodes in this
        process. Default: 1 (the model keeps the other cores).

    Returns
    -------
    pandas.DataFrame
        The image-level table. ``df.attrs`` holds ``qc`` (QCTable), ``qc_path``,
        ``breast_path``, ``exam_path``, ``regions_path`` (None without heatmaps),
        ``dicom`` (the ``--dicom-out`` summary or None), ``n_rejected``.
    """
    from mammolens.predict.predictor import Predictor, load_predictor

    predictor = run if isinstance(run, Predictor) else load_predictor(run, device=device, backend=backend)
    if batch_size < 1:
        raise ConfigError("batch size must be at least 1")
    if top_k < 0:
        raise ConfigError(f"top-k must be >= 0, got {top_k}")
    if not 0.0 <= float(operating_point) <= 1.0:
        raise ConfigError(f"operating point must be in [0, 1], got {operating_point}")
    if stow and dicom_out is None:
        raise ConfigError("--stow sends the DICOM results: give --dicom-out DIR too")
    if stow and not str(stow).startswith(("http://", "https://")):
        raise ConfigError(f"--stow must be a DICOMweb URL (http(s)://...), got {stow!r}")
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    cache_obj = None
    if cache is not None:
        from mammolens.data.cache import open_cache

        cache_obj = open_cache(cache) if isinstance(cache, str | Path) else cache
        csize = tuple(cache_obj.settings.size)
        if csize != tuple(predictor.image_size):
            raise ConfigError(
                f"cache {getattr(cache_obj, 'root', cache)} has images of {csize[0]}x{csize[1]} but the model was trained on "
                f"{predictor.image_size[0]}x{predictor.image_size[1]}; preprocess with --size {predictor.image_size[0]}x{predictor.image_size[1]} or drop --cache"
            )
    items, qc = collect_inputs(list(inputs), cache=cache_obj, split=split)
    paths = _output_paths(out)
    paths["images"].parent.mkdir(parents=True, exist_ok=True)
    if dicom_out is not None and heatmaps_dir is None:
        heatmaps_dir = paths["heatmaps"]  # the DICOM overlays and segmentations need the maps
    rpart = paths["regions_partial"]

    done: set[str] = set()
    part = paths["partial"]
    if part.exists() and resume:
        try:
            prev = pd.read_csv(part, dtype=str, keep_default_na=False, usecols=["image_id", "path", "model"])
            if (prev["model"] == predictor.name).all():
                done = set(prev["path"]) | set(prev["image_id"])
            else:
                part.unlink()
        except (ValueError, pd.errors.EmptyDataError, KeyError):
            part.unlink()
    elif part.exists():
        part.unlink()
    if not part.exists():
        rpart.unlink(missing_ok=True)
    todo = [it for it in items if it.path not in done and it.image_id not in done]

    bar = None
    task = None
    if progress:
        from mammolens.progress import progress_bar

        bar = progress_bar()
        bar.start()
        task = bar.add_task("predict", total=len(todo))
    try:
        new_file = not part.exists()
        new_regions = not rpart.exists()
        with part.open("a", newline="", encoding="utf-8") as fh, rpart.open("a", newline="", encoding="utf-8") as rfh:
            writer = csv.DictWriter(fh, fieldnames=_STREAM_COLUMNS)
            rwriter = csv.DictWriter(rfh, fieldnames=REGION_COLUMNS)
            if new_file:
                writer.writeheader()
            if new_regions:
                rwriter.writeheader()
            for chunk in score_items(
                predictor,
                todo,
                cache=cache_obj,
                heatmaps_dir=heatmaps_dir,
                batch_size=batch_size,
                gradcam=gradcam,
                workers=1 if workers is None else workers,
                on_item=(lambda: bar.advance(task)) if bar is not None else None,
                top_k=top_k,
            ):
                # regions first: a row in the table means its regions are on disk
                rwriter.writerows(chunk.regions)
                rfh.flush()
                writer.writerows(chunk.rows)
                fh.flush()
                qc.extend(chunk.qc)
    finally:
        if bar is not None:
            bar.stop()

    df = pd.read_csv(part, dtype={c: str for c in _STREAM_COLUMNS if c not in ("score", "logit")}, keep_default_na=False)
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    df["logit"] = pd.to_numeric(df["logit"], errors="coerce")
    df = df.drop_duplicates("image_id", keep="last")
    # input order (decode workers finish out of order; a resumed run appends)
    order = {it.path: i for i, it in enumerate(items)}
    df = df.iloc[np.argsort(df["path"].map(order).fillna(len(items)).to_numpy(), kind="stable")].reset_index(drop=True)
    df = add_contralateral(df, weight=float(predictor.config.predict.contralateral))
    df = add_rollups(df)
    tmp = paths["images"].with_name(paths["images"].name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, paths["images"])
    breast_table(df).to_csv(paths["breast"], index=False)
    exam_table(df).to_csv(paths["exam"], index=False)
    regions_path = None
    if heatmaps_dir is not None:
        reg = pd.read_csv(rpart, dtype={"image_id": str}, keep_default_na=False)
        reg = reg[reg["image_id"].isin(set(df["image_id"]))].drop_duplicates(["image_id", "rank"], keep="last")
        order = {iid: i for i, iid in enumerate(df["image_id"])}
        reg = reg.sort_values(["image_id", "rank"], key=lambda c: c.map(order) if c.name == "image_id" else c)
        reg.to_csv(paths["regions"], index=False)
        regions_path = str(paths["regions"])
    dicom = None
    if dicom_out is not None:
        from mammolens.predict.dicom_results import write_dicom_results

        dicom, dqc = write_dicom_results(df, dicom_out, model_name=predictor.name, operating_point=operating_point, stow=stow)
        qc.extend(dqc)
    qc.write_csv(paths["qc"])
    part.unlink(missing_ok=True)
    rpart.unlink(missing_ok=True)
    df.attrs.update(
        qc=qc,
        qc_path=str(paths["qc"]),
        breast_path=str(paths["breast"]),
        exam_path=str(paths["exam"]),
        regions_path=regions_path,
        dicom=dicom,
        n_rejected=len(qc.rejected),
        model=predictor.name,
        checkpoint=str(predictor.checkpoint),
    )
    return df
