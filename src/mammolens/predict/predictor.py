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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammolens.config import Config, config_from_dict
from mammolens.data.transform import Transform
from mammolens.errors import CheckpointError, ConfigError, InputError
from mammolens.run_folder import read_checkpoint, resolve_checkpoint


@dataclass
class ImageResult:
    """The outputs for one image: probability, logit and heatmaps (cache geometry)."""

    score: float
    logit: float
    maps: dict[str, np.ndarray] = field(default_factory=dict)


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
    """

    def __init__(self, model: torch.nn.Module, config: Config, meta: dict[str, Any], checkpoint: Path, device: str = "cpu") -> None:
        from mammolens.data.preprocess import PreprocessSettings

        self.model = model.eval().to(device)
        self.config = config
        self.meta = meta
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.name = config.model.name
        pre = meta.get("preprocess")
        try:
            self.settings = PreprocessSettings.model_validate(pre) if pre else PreprocessSettings()
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{checkpoint}: preprocessing settings in the checkpoint are not valid ({e})") from None
        self.image_size: tuple[int, int] = tuple(self.settings.size)  # type: ignore[assignment]

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
        x = torch.from_numpy(np.stack(arrs)).unsqueeze(1)
        if not torch.isfinite(x).all():
            raise ValueError("images contain NaN or infinite values")
        return x.to(self.device)

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
        with torch.inference_mode():
            out = self.model(x)
        out = {k: v.detach().clone() for k, v in out.items()}
        logits = out["logit"].float().cpu().numpy()
        probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        maps: list[dict[str, np.ndarray]] = [{} for _ in range(len(logits))]
        if heatmaps:
            gc = self.config.predict.gradcam if gradcam is None else gradcam
            maps = compute_heatmaps(self.model, x, out, gradcam=gc)
        return [ImageResult(float(p), float(lg), m) for p, lg, m in zip(probs, logits, maps, strict=True)]

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

        from mammolens.predict.api import FileItem, score_items

        items = [FileItem.from_path(p) for p in paths]
        rows: list[dict[str, Any]] = []
        qc_rows: list[dict[str, Any]] = []
        for chunk in score_items(self, items, heatmaps_dir=heatmaps_dir, batch_size=batch_size):
            rows.extend(chunk.rows)
            qc_rows.extend({"path": q.path, "image_id": q.image_id, "reason": q.reason} for q in chunk.qc)
        from mammolens.predict.api import PRED_COLUMNS, add_rollups

        df = pd.DataFrame(rows, columns=PRED_COLUMNS)
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
            "manifest_hash": self.meta.get("manifest_hash"),
            "version": self.meta.get("version"),
        }


def load_predictor(run_or_ckpt: str | Path, *, device: str = "cpu") -> Predictor:
    """Load a :class:`Predictor` from a run folder or a ``.ckpt`` file.

    Raises
    ------
    CheckpointError
        Missing, corrupt or incompatible checkpoint (the message names the file).
    """
    from mammolens.models import create_model, model_kwargs_from_config

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
    return Predictor(model, cfg, meta, path, device=device)


def transform_or_identity(tf: Transform | None, shape: tuple[int, int]) -> Transform:
    return tf if tf is not None else Transform.identity(*shape)


__all__ = ["ImageResult", "InputError", "Predictor", "load_predictor", "resolve_checkpoint"]
