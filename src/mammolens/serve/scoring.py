"""The adapter between the service and the model: :func:`mammolens.predict.load_predictor`.

The worker calls :meth:`Scorer.score_files` with the stored DICOM files of one study and
gets one :class:`ImageResult` per file (image, breast and exam score and the heatmap
``.npz``). Anything with that method can stand in for :class:`PredictorScorer` (the
service takes a scorer object), which keeps the service testable on its own.

The service never decodes uploaded pixels in its own process: it wraps the scorer in
:class:`IsolatedScorer`, which runs it in a worker process of
:class:`mammolens.io.sandbox.IsolatedPool` (the model is loaded once per worker). A
decoder that aborts, segfaults, panics or hangs on an uploaded image kills that worker,
not the server; the pool is replaced and the study's images are tried one by one, in
children of their own, to name the one that kills its decoder.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from mammolens.data.heatmap_io import PREFERRED_KINDS, heatmap_original, heatmap_peak  # noqa: F401 - one owner
from mammolens.errors import CheckpointError, InputError
from mammolens.predict.table import ImageResult  # the one class (re-exported for scorers)


class Scorer(Protocol):
    name: str

    def score_files(self, paths: list[Path], heatmaps_dir: Path) -> dict[Path, ImageResult]: ...


def _f(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(x) else x


class PredictorScorer:
    """Scores DICOM files with a trained run (or checkpoint) through ``load_predictor``.

    The predictor is loaded on first use (in the worker thread, not at import) and calls
    are serialised with a lock: one model, one forward pass at a time.
    """

    def __init__(self, model: str | Path, *, device: str = "cpu", gradcam: bool | None = False) -> None:
        self.model_path = Path(model)
        #: Grad-CAM costs a backward pass per image and the viewer shows the localisation
        #: map: off by default in the service (``None``: the run's ``predict.gradcam``)
        self.gradcam = gradcam
        if not self.model_path.exists():
            raise CheckpointError(f"{self.model_path}: model run or checkpoint not found")
        self.device = device
        self.name = self.model_path.name if self.model_path.is_dir() else self.model_path.stem
        self._predictor = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # sent to a scoring process: without the model or lock
        return {k: v for k, v in self.__dict__.items() if k not in ("_predictor", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._predictor = None
        self._lock = threading.Lock()

    @property
    def window(self) -> str | int:
        """The run's display window (``preprocess.window``): the viewer renders with it,
        so the radiologist sees the intensities the model saw. Read from ``meta.json``
        (no model load); ``"auto"`` when the run does not say."""
        run = self.model_path if self.model_path.is_dir() else self.model_path.parent.parent
        try:
            meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
            w = (meta.get("preprocess") or {}).get("window", "auto")
        except (OSError, ValueError, AttributeError):
            return "auto"
        return w if isinstance(w, int) and not isinstance(w, bool) and w >= 0 else "auto"

    def load(self):
        if self._predictor is None:
            from mammolens.predict import load_predictor

            predictor = load_predictor(self.model_path, device=self.device)
            if self.gradcam is not None:
                predictor.config.predict.gradcam = bool(self.gradcam)
            self._predictor = predictor
        return self._predictor

    def score_files(self, paths: list[Path], heatmaps_dir: Path) -> dict[Path, ImageResult]:
        with self._lock:
            predictor = self.load()
            df = predictor.predict_files([str(p) for p in paths], heatmaps_dir=heatmaps_dir)
        out = match_rows(df, paths)
        if not out and df is not None and "error" in df.columns:
            errors = [str(e) for e in df["error"].tolist() if isinstance(e, str) and e]
            if errors:  # the reason of the first failed image (paths are digest names)
                raise RuntimeError(f"the model rejected the images: {errors[0][:300]}")
        return out


# ----------------------------------------------------------------- isolation

#: the scorer of this scoring process (set by the pool's initializer)
_CHILD_SCORER: Scorer | None = None


def _set_child_scorer(scorer: Scorer) -> None:
    global _CHILD_SCORER
    _CHILD_SCORER = scorer


def _score_in_child(item: tuple[list[str], str]) -> dict[str, ImageResult]:
    paths, heatmaps_dir = item
    assert _CHILD_SCORER is not None, "scoring process started without a scorer"
    out = _CHILD_SCORER.score_files([Path(p) for p in paths], Path(heatmaps_dir))
    return {str(p): r for p, r in out.items()}


def _no_path(_item) -> None:
    return None


def _decode_check(path: str) -> None:
    """Decode ``path`` as the model does; raises InputError (in a sandbox child)."""
    from mammolens.io.images import read_image

    read_image(path, validate=False)


class IsolatedScorer:
    """Runs another scorer in a process of its own, so that a crash, panic or hang while
    decoding (or scoring) an uploaded image cannot take the server down.

    Parameters
    ----------
    scorer
        The scorer to run; it is pickled to the scoring process once and keeps its
        state there (a :class:`PredictorScorer` loads the model on the first study).
    timeout
        Seconds one study may take before its scoring process is declared hung and killed.

    Raises
    ------
    InputError
        From :meth:`score_files` when the scoring process died or hung: its path is the
        image whose decoding kills a process of its own (found by trying each image
        alone), or empty when no single image does, with the reason.
    """

    def __init__(self, scorer: Scorer, *, timeout: float = 600.0) -> None:
        self.scorer = scorer
        self.name = getattr(scorer, "name", "")
        self.timeout = float(timeout)
        self._local = threading.local()  # one pool per worker thread
        self._pools: list = []
        self._lock = threading.Lock()

    @property
    def window(self) -> str | int:
        return getattr(self.scorer, "window", "auto")

    def _pool(self):
        from mammolens.io.sandbox import IsolatedPool

        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = IsolatedPool(
                1, _score_in_child, timeout=self.timeout,
                initializer=functools.partial(_set_child_scorer, self.scorer), path_of=_no_path,
            )
            self._local.pool = pool
            with self._lock:
                self._pools.append(pool)
        return pool

    def score_files(self, paths: list[Path], heatmaps_dir: Path) -> dict[Path, ImageResult]:
        item = ([str(p) for p in paths], str(heatmaps_dir))
        ((_item, out),) = list(self._pool().map_unordered([item]))
        if isinstance(out, InputError):
            raise self._culprit(paths, out) from None
        by_name = {str(p): p for p in paths}
        return {by_name[k]: r for k, r in out.items() if k in by_name}

    def _culprit(self, paths: list[Path], err: InputError) -> InputError:
        """The scoring process died (or a stray error escaped the scorer): decode each
        image alone in a sandbox child; the first that fails is named with its reason."""
        from mammolens.io.sandbox import run_isolated

        if err.path:  # the scorer itself named the file
            return err
        timeout = min(self.timeout, 300.0)
        for p in paths:
            out = run_isolated(_decode_check, str(p), timeout=timeout)
            if isinstance(out, InputError):
                return InputError(p, out.reason)
        return InputError(None, f"the scoring process failed ({err.reason})")

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, []
        for pool in pools:
            pool.close(kill=True)


def match_rows(df, paths: list[Path]) -> dict[Path, ImageResult]:
    """Map a predictions table onto the input files (by ``path`` column, else by order)."""
    out: dict[Path, ImageResult] = {}
    if df is None or len(df) == 0:
        return out
    if "path" in df.columns:
        by_path = {str(Path(p).resolve()): p for p in paths}
        rows = ((by_path.get(str(Path(str(r["path"])).resolve())), r) for _, r in df.iterrows())
    elif len(df) == len(paths):
        rows = zip(paths, (r for _, r in df.iterrows()), strict=True)
    else:
        raise RuntimeError(
            f"predictions table has {len(df)} rows for {len(paths)} files and no 'path' column"
        )
    for p, r in rows:
        if p is None:
            continue
        score = _f(r.get("score"))
        if score is None:
            continue
        hm = r.get("heatmap")
        hm_path = Path(str(hm)) if isinstance(hm, str | Path) and str(hm) and Path(str(hm)).exists() else None
        out[p] = ImageResult(
            score=score,
            breast_score=_f(r.get("breast_score")),
            exam_score=_f(r.get("exam_score")),
            heatmap=hm_path,
        )
    return out


def write_untrained_run(
    run_dir: str | Path,
    *,
    preset: str = "tiny",
    overrides: dict | None = None,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write a run folder holding a randomly initialised model (no training).

    For smoke tests, benchmarks of the service's throughput and demos: the scores are
    meaningless but every stage (scoring, heatmaps, DICOM outputs) runs as with a trained
    run. The checkpoint has the layout ``mammolens train`` writes
    (``checkpoints/last.ckpt`` with ``state_dict``, ``hyper_parameters.config`` and the
    ``mammolens`` metadata), so :func:`mammolens.predict.load_predictor` loads it.
    """

    import torch

    from mammolens import __version__
    from mammolens.config import load_config
    from mammolens.data.preprocess import PreprocessSettings
    from mammolens.models import create_model, model_kwargs_from_config
    from mammolens.run_folder import CKPT_DIR, LAST, checkpoint_payload, write_config, write_meta

    torch.manual_seed(seed)
    cfg = load_config(preset, overrides or {})
    cfg_d = cfg.model_dump(mode="json")
    pre = PreprocessSettings() if image_size is None else PreprocessSettings(size=tuple(image_size))
    meta = {"preprocess": pre.model_dump(mode="json"), "version": __version__, "untrained": True,
            "model": cfg.model.name, "manifest_hash": None}
    model = create_model(cfg.model.name, pretrained="none", **model_kwargs_from_config(cfg.model))
    run = Path(run_dir)
    (run / CKPT_DIR).mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint_payload(model.state_dict(), cfg_d, meta), run / CKPT_DIR / LAST)
    write_meta(run, meta)
    import yaml

    write_config(run, yaml.safe_dump(cfg_d, sort_keys=False))
    return run
