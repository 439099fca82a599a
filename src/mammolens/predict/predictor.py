"""Loading a trained model (run folder or checkpoint) and scoring images.

>>> p = load_predictor("runs/attention")                 # doctest: +SKIP
>>> df = p.predict_files(["a.dcm", "b.png"], heatmaps_dir="heatmaps")   # doctest: +SKIP
>>> res = p.predict_arrays([pre.image], transforms=[pre.transform])  # doctest: +SKIP

A checkpoint written by ``mammolens train`` carries the resolved configuration and the
run's metadata (preprocessing settings, manifest hash, model name), so a ``.ckpt`` file
alone is enough to predict; images are preprocessed with the same settings as the
training cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammolens.config import Config, config_from_dict
from mammolens.data.transform import Transform
from mammolens.errors import CheckpointError, ConfigError, InputError
from mammolens.predict.backends import EXPORT_FILE, EXPORT_FORMAT_VERSION, EXPORT_FORMATS
from mammolens.predict.table import ImageResult
from mammolens.run_folder import read_checkpoint, resolve_checkpoint

log = logging.getLogger("mammolens.predict")


class Predictor:
    """A trained model ready for inference (eval mode, no gradients except Grad-CAM).

    Attributes
    ----------
    model : torch.nn.Module
    config : Config
    meta : dict
        Run metadata (``preprocess`` settings, ``manifest_hash``, ``version``...).
    settings : PreprocessSettings
        How raw images are preprocessed (those of the training cache).
    name : str
        Model name (e.g. ``attention_resnet50``).
    checkpoint : Path
    has_benign : bool
        The model has the benign output (``model.benign_output``): predictions carry
        ``benign_score``. False for runs trained without it (and every run before it existed).
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        config: Config,
        meta: dict[str, Any],
        checkpoint: Path,
        device: str = "cpu",
        *,
        backend: str | Any = "eager",
    ) -> None:
        from mammolens.data.preprocess import PreprocessSettings

        self._model = model.eval().to(device) if model is not None else None
        self.config = config
        self.meta = meta
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.name = config.model.name
        self.has_benign = bool(config.model.benign_output)
        pre = meta.get("preprocess")
        try:
            self.settings = PreprocessSettings.model_validate(pre) if pre else PreprocessSettings()
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{checkpoint}: preprocessing settings in the checkpoint are not valid ({e})") from None
        self.image_size: tuple[int, int] = tuple(self.settings.size)  # type: ignore[assignment]
        #: the forward pass (:mod:`mammolens.predict.backends`); a name builds it from the model
        self.backend = self._make_backend(backend)
        self._gradcam_warned = False
        #: the decision threshold recorded with an export (``{"threshold", "level", ...}``)
        self.operating_point: dict[str, Any] | None = None

    @property
    def model(self) -> torch.nn.Module | None:
        """The PyTorch model (``None`` for an exported graph)."""
        return self._model

    @model.setter
    def model(self, model: torch.nn.Module | None) -> None:
        # a new model: rebuild the backend around it (same kind as asked for)
        self._model = model.eval().to(self.device) if model is not None else None
        if model is not None:
            self.backend = self._make_backend(getattr(self.backend, "requested", "eager"))

    def _make_backend(self, backend: str | Any) -> Any:
        from mammolens.predict.backends import make_backend

        if not isinstance(backend, str):
            return backend
        if self.model is None:
            raise ConfigError(f"{self.checkpoint}: no PyTorch model to build the {backend!r} backend from")
        return make_backend(backend, self.model, self.image_size)

    # -- preprocessing -------------------------------------------------------------------
    def preprocess(self, source: str | Path | np.ndarray, *, laterality: str | None = None) -> Any:
        """Preprocess one image like the training cache (:func:`preprocess_image`)."""
        from mammolens.data.preprocess import preprocess_image

        return preprocess_image(source, self.settings, laterality=laterality or None)

    # -- inference -------------------------------------------------------------------------
    def _as_batch(self, images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        arrs = [np.asarray(a, dtype=np.float32) for a in images]
        if not arrs:
            raise ValueError("no images to predict")
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"images must be 2-D arrays of one shape (the cache size {self.image_size}), got {sorted(shapes)}")
        if next(iter(shapes)) != tuple(self.image_size):
            raise ValueError(
                f"images are {next(iter(shapes))} but the model expects {tuple(self.image_size)}: "
                f"preprocess them with Predictor.preprocess() (the run's settings)"
            )
        stacked = np.stack(arrs)
        # NumPy, not torch: a torch reduction here starts the intra-op thread pool between
        # two model calls, and on a busy 2-core machine its barrier waits for a descheduled
        # thread (60 ms for this check under load, against 1 ms in NumPy)
        if not np.isfinite(stacked).all():
            raise ValueError("images contain NaN or infinite values")
        return torch.from_numpy(stacked).unsqueeze(1).to(self.device)

    def predict_arrays(
        self,
        images: list[np.ndarray] | np.ndarray,
        *,
        heatmaps: bool = False,
        gradcam: bool | None = None,
    ) -> list[ImageResult]:
        """Score preprocessed images (cache geometry, float in [0, 1]).

        Parameters
        ----------
        images
            A list (or stacked array) of ``(H, W)`` preprocessed images.
        heatmaps
            Also compute the heatmaps (``attention``, ``localization`` and, when
            ``gradcam`` (default: the run's ``predict.gradcam``), ``gradcam``).
        """
        from mammolens.explain.heatmaps import compute_heatmaps

        x = self._as_batch(images)
        out = self._forward(x)
        logits = np.asarray(out["logit"], dtype=np.float32).reshape(-1)
        probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        maps: list[dict[str, np.ndarray]] = [{} for _ in range(len(logits))]
        if heatmaps:
            gc = self.config.predict.gradcam if gradcam is None else gradcam
            if gc and self.model is None:
                if not self._gradcam_warned:  # an exported graph has no gradients
                    log.warning("%s: Grad-CAM skipped (an exported model has no gradients; attention and localisation maps are written)", self.checkpoint)
                    self._gradcam_warned = True
                gc = False
            touts = {k: torch.from_numpy(np.asarray(v)) for k, v in out.items()}
            maps = compute_heatmaps(self.model, x, touts, gradcam=bool(gc))
        res = [ImageResult(float(p), float(lg), m) for p, lg, m in zip(probs, logits, maps, strict=True)]
        if "benign_logit" in out:  # the benign output (model.benign_output)
            blog = np.asarray(out["benign_logit"], dtype=np.float32).reshape(-1)
            bprob = 1.0 / (1.0 + np.exp(-blog.astype(np.float64)))
            for r, bp, bl in zip(res, bprob, blog, strict=True):
                r.benign_score, r.benign_logit = float(bp), float(bl)
        return res

    def _forward(self, x: torch.Tensor) -> dict[str, Any]:
        """The backend's outputs, averaged over the run's test-time flips (``predict.tta``)."""
        out = self.backend(x)
        tta = list(self.config.predict.tta)
        if not tta:
            return out
        outs = [out]
        for _aug in tta:  # "vflip" (the only one): flip rows, score, flip the maps back
            o = self.backend(torch.flip(x, dims=[-2]))
            outs.append({k: (np.flip(np.asarray(v), axis=-2).copy() if np.asarray(v).ndim == 3 else np.asarray(v)) for k, v in o.items()})
        return {k: np.mean([np.asarray(o[k], dtype=np.float32) for o in outs], axis=0) for k in out}

    def predict_files(
        self,
        paths: list[str | Path],
        *,
        heatmaps_dir: str | Path | None = None,
        batch_size: int = 8,
    ):  # -> pandas.DataFrame
        """Score image files (DICOM, PNG, PGM, TIFF); bad files become ``qc`` rows.

        Returns the prediction table (see :func:`mammolens.predict.predict`) with an
        extra ``error`` column (empty for scored images; the reason otherwise, score NaN).
        """
        import pandas as pd

        from mammolens.predict.scoring import FileItem, score_items

        items = [FileItem.from_path(p) for p in paths]
        rows: list[dict[str, Any]] = []
        qc_rows: list[dict[str, Any]] = []
        for chunk in score_items(self, items, heatmaps_dir=heatmaps_dir, batch_size=batch_size):
            rows.extend(chunk.rows)
            qc_rows.extend({"path": q.path, "image_id": q.image_id, "reason": q.reason} for q in chunk.qc)
        from mammolens.predict.table import BENIGN_STREAM_COLUMNS, PRED_COLUMNS, add_rollups

        df = pd.DataFrame(rows, columns=PRED_COLUMNS + (BENIGN_STREAM_COLUMNS if self.has_benign else []))
        df = add_rollups(df)
        df["error"] = ""
        if qc_rows:
            bad = pd.DataFrame(qc_rows)
            bad["score"] = np.nan
            bad["error"] = bad.pop("reason")
            bad["model"] = self.name
            df = pd.concat([df, bad], ignore_index=True)
        return df

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "checkpoint": str(self.checkpoint),
            "image_size": list(self.image_size),
            "device": str(self.device),
            "backend": self.backend.describe(),
            "manifest_hash": self.meta.get("manifest_hash"),
            "version": self.meta.get("version"),
            "outputs": ["malignant", "benign"] if self.has_benign else ["malignant"],
        }


def load_predictor(run_or_ckpt: str | Path, *, device: str = "cpu", backend: str = "eager") -> Predictor:
    """Load a :class:`Predictor` from a run folder, a ``.ckpt`` file or an export folder.

    Parameters
    ----------
    run_or_ckpt
        A run folder (``checkpoints/best.ckpt``), a checkpoint, or a folder written by
        ``mammolens export`` (its ``mammolens_export.json`` names the runtime, and the
        model runs there: ONNX Runtime or OpenVINO, no PyTorch weights needed).
    device
        ``cpu``, ``cuda`` or ``auto`` (PyTorch backends).
    backend
        ``eager``, ``compiled``, ``onnx`` or ``openvino``
        (:mod:`mammolens.predict.backends`); one that cannot run here falls back to
        ``eager`` with the reason logged. Ignored for an export folder.

    Raises
    ------
    CheckpointError
        Missing, corrupt or incompatible checkpoint (the message names the file).
    """
    from mammolens.models import create_model, model_kwargs_from_config

    if Path(run_or_ckpt).is_dir() and (Path(run_or_ckpt) / EXPORT_FILE).is_file():
        return load_exported(run_or_ckpt)

    if device not in ("cpu", "cuda", "auto") and not str(device).startswith("cuda:"):
        raise ConfigError(f"device must be cpu, cuda or auto, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for but no CUDA device is available")
    ck = read_checkpoint(run_or_ckpt)
    path, meta = ck.path, ck.meta
    try:
        cfg = config_from_dict(ck.config, where=str(path))
    except ConfigError as e:
        raise CheckpointError(f"{path}: incompatible configuration in checkpoint ({e})") from None
    mc = cfg.model
    model = create_model(mc.name, pretrained="none", **model_kwargs_from_config(mc))
    sd = ck.model_state
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit model {mc.name} ({str(e).splitlines()[0][:300]})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit model {mc.name}: {len(missing)} missing (e.g. {list(missing)[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {list(unexpected)[:3]})"
        )
    return Predictor(model, cfg, meta, path, device=device, backend=backend)


def read_export(folder: str | Path) -> dict[str, Any]:
    """The export record of ``folder`` (validated); :class:`CheckpointError` names what is wrong."""
    folder = Path(folder)
    p = folder / EXPORT_FILE
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: not a mammolens export folder (no {EXPORT_FILE})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(rec, dict):
        raise CheckpointError(f"{p}: not a mammolens export record")
    missing = [k for k in ("format", "file", "preprocess", "config") if k not in rec]
    if missing:
        raise CheckpointError(f"{p}: export record lacks {', '.join(missing)}")
    if rec["format"] not in EXPORT_FORMATS:
        raise CheckpointError(f"{p}: unknown export format {rec['format']!r}")
    if int(rec.get("format_version", 1)) > EXPORT_FORMAT_VERSION:
        raise CheckpointError(f"{p}: written by a newer mammolens (format_version {rec['format_version']})")
    if not (folder / rec["file"]).is_file():
        raise CheckpointError(f"{folder / rec['file']}: the exported model file is missing")
    return rec


def load_exported(folder: str | Path) -> Any:
    """A :class:`~mammolens.predict.Predictor` running an export folder in its runtime.

    The predictor has no PyTorch model (``predictor.model is None``): scores, attention
    and localisation maps come from the runtime; Grad-CAM is skipped. The recorded
    operating point is ``predictor.operating_point``.
    """
    from mammolens.predict.backends import BackendUnavailable, runtime_backend

    folder = Path(folder)
    rec = read_export(folder)
    try:
        cfg = config_from_dict(rec["config"], where=str(folder / EXPORT_FILE))
    except ConfigError as e:
        raise CheckpointError(f"{folder / EXPORT_FILE}: incompatible configuration ({e})") from None
    model_file = folder / rec["file"]
    try:
        be = runtime_backend(rec["format"], model_file)
    except BackendUnavailable as e:
        raise CheckpointError(str(e)) from None
    meta = {"preprocess": rec["preprocess"], "manifest_hash": (rec.get("source") or {}).get("manifest_hash"),
            "version": (rec.get("source") or {}).get("trained_with"), "export": str(folder)}
    pred = Predictor(None, cfg, meta, model_file, backend=be)
    pred.operating_point = rec.get("operating_point")
    return pred


def transform_or_identity(tf: Transform | None, shape: tuple[int, int]) -> Transform:
    return tf if tf is not None else Transform.identity(*shape)


__all__ = ["ImageResult", "InputError", "Predictor", "load_exported", "load_predictor", "read_export", "resolve_checkpoint"]
