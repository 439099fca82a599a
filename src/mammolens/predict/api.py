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
    model, path, logit, contralateral_logit

and, for a run trained with the benign output (``model.benign_output``; a run without
it writes none of these columns)::

    benign_score         probability of a benign finding in the image, in [0, 1]
    breast_benign_score  max over the breast's views
    exam_benign_score    max over the exam's images
    benign_logit

plus ``PREDICTIONS_breast.csv`` (patient_id, study_id, laterality, breast_score,
[breast_benign_score,] n_images), ``PREDICTIONS_exam.csv`` (patient_id, study_id,
exam_score, [exam_benign_score,] n_images), for the benign output
``PREDICTIONS_exam_gmic.csv`` (one row per exam: ``patient_id, study_id, left_benign,
left_malignant, right_benign, right_malignant``, the layout of the NYU / GMIC models'
outputs) and ``qc.csv`` beside it (rejected inputs, with the reason). Images are processed in
chunks and appended to ``PREDICTIONS.partial.csv``, so memory does not grow with the
number of inputs and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammolens.errors import ConfigError
from mammolens.predict.scoring import Chunk, FileItem, score_items  # noqa: F401 - part of this module's API
from mammolens.predict.table import (  # noqa: F401 - part of this module's API
    BENIGN_COLUMNS,
    GMIC_COLUMNS,
    PRED_COLUMNS,
    QC_STAGE,
    REGION_COLUMNS,
    STREAM_COLUMNS,
    add_rollups,
    breast_table,
    exam_table,
    gmic_exam_table,
    stream_columns,
)
from mammolens.qc import QCTable

_STREAM_COLUMNS = STREAM_COLUMNS
IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".pgm", ".pnm", ".tif", ".tiff", ".ima", ""}
MANIFEST_SUFFIXES = {".csv", ".parquet", ".pq"}


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
        has = contra.notna().to_numpy()
        df.loc[has, "score"] = contralateral_score(df["logit"], contra, weight)[has]
    return df


def contralateral_score(logit: Any, contralateral_logit: Any, weight: float) -> np.ndarray:
    """``sigmoid(logit - weight * contralateral_logit)``; an image whose other breast has no
    image of that view (NaN) keeps ``sigmoid(logit)``."""
    contra = pd.to_numeric(pd.Series(np.asarray(contralateral_logit, dtype=float)), errors="coerce").fillna(0.0).to_numpy(float)
    return 1.0 / (1.0 + np.exp(-(np.asarray(logit, dtype=float) - weight * contra)))


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
        "gmic": Path(f"{stem}_exam_gmic.csv"),
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
    decode_pool: Any = None,
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
        process. Default: 1 (the model keeps the other cores). They are started before
        the model is loaded, so their start-up overlaps it.
    decode_pool
        Started decode workers (:func:`mammolens.predict.scoring.start_decode_pool`) to
        use instead of starting ``workers`` new ones, for a caller that predicts
        repeatedly; the caller closes it.

    Returns
    -------
    pandas.DataFrame
        The image-level table. ``df.attrs`` holds ``qc`` (QCTable), ``qc_path``,
        ``breast_path``, ``exam_path``, ``gmic_path`` (the GMIC-style exam table; None
        for a run without the benign output), ``regions_path`` (None without heatmaps),
        ``dicom`` (the ``--dicom-out`` summary or None), ``n_rejected``.
    """
    from mammolens.predict.predictor import Predictor, load_predictor
    from mammolens.predict.scoring import start_decode_pool

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
    items, qc = collect_inputs(list(inputs), cache=cache_obj, split=split)
    n_workers = 1 if workers is None else int(workers)
    own_pool = None
    n_files = sum(it.source == "file" for it in items)
    if decode_pool is None and n_workers > 0 and n_files:
        # started before the model is loaded: their start-up (seconds) overlaps the loading
        own_pool = decode_pool = start_decode_pool(min(n_workers, n_files))
    try:
        predictor = run if isinstance(run, Predictor) else load_predictor(run, device=device, backend=backend)
        return _predict_items(
            predictor, items, qc, out, cache_obj=cache_obj, heatmaps_dir=heatmaps_dir, batch_size=batch_size, gradcam=gradcam,
            progress=progress, resume=resume, top_k=top_k, dicom_out=dicom_out, stow=stow, operating_point=operating_point,
            workers=n_workers, decode_pool=decode_pool,
        )
    finally:
        if own_pool is not None:
            own_pool.close()


def _predict_items(
    predictor: Any,
    items: list[FileItem],
    qc: QCTable,
    out: str | Path,
    *,
    cache_obj: Any,
    heatmaps_dir: str | Path | None,
    batch_size: int,
    gradcam: bool | None,
    progress: bool,
    resume: bool,
    top_k: int,
    dicom_out: str | Path | None,
    stow: str | None,
    operating_point: float,
    workers: int,
    decode_pool: Any,
) -> pd.DataFrame:
    """:func:`predict` once the model is loaded and the inputs collected."""
    if cache_obj is not None:
        csize = tuple(cache_obj.settings.size)
        if csize != tuple(predictor.image_size):
            raise ConfigError(
                f"cache {getattr(cache_obj, 'root', cache_obj)} has images of {csize[0]}x{csize[1]} but the model was trained on "
                f"{predictor.image_size[0]}x{predictor.image_size[1]}; preprocess with --size {predictor.image_size[0]}x{predictor.image_size[1]} or drop --cache"
            )
    paths = _output_paths(out)
    paths["images"].parent.mkdir(parents=True, exist_ok=True)
    if dicom_out is not None and heatmaps_dir is None:
        heatmaps_dir = paths["heatmaps"]  # the DICOM overlays and segmentations need the maps
    rpart = paths["regions_partial"]

    benign = bool(getattr(predictor, "has_benign", False))
    columns = stream_columns(benign)
    done: set[str] = set()
    part = paths["partial"]
    if part.exists() and resume:
        try:
            prev = pd.read_csv(part, dtype=str, keep_default_na=False)
            # the same model, and the same columns (a run with / without the benign output)
            if list(prev.columns) == columns and (prev["model"] == predictor.name).all():
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
            writer = csv.DictWriter(fh, fieldnames=columns)
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
                workers=workers,
                pool=decode_pool,
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

    numeric = ("score", "logit", "benign_score", "benign_logit")
    df = pd.read_csv(part, dtype={c: str for c in columns if c not in numeric}, keep_default_na=False)
    for c in numeric:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
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
    gmic_path = None
    if benign:
        gmic_exam_table(df).to_csv(paths["gmic"], index=False)
        gmic_path = str(paths["gmic"])
    else:
        paths["gmic"].unlink(missing_ok=True)  # a stale one from an earlier run with the benign output
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
        gmic_path=gmic_path,
        regions_path=regions_path,
        dicom=dicom,
        n_rejected=len(qc.rejected),
        model=predictor.name,
        checkpoint=str(predictor.checkpoint),
    )
    return df
