"""Post-training int8 quantisation of an exported model (``mammolens export --int8``).

An option, never the default: int8 changes the scores slightly, so the export records the
differences to the float32 PyTorch model on held calibration images, and
``bench/bench_int8.py`` measures the AUC change on a test split.

* ``--format onnx --int8``: ONNX Runtime static quantisation (QDQ format: per-channel int8
  weights, uint8 activations, min-max calibration) -- no extra package;
* ``--format openvino --int8``: the same quantised QDQ graph converted to OpenVINO IR
  (OpenVINO turns each QuantizeLinear/DequantizeLinear pair into a FakeQuantize and runs
  the convolutions with int8 instructions: VNNI, AMX where the CPU has them). NNCF's
  post-training quantisation (mixed preset) was tried first: on the trained demo model it
  moved scores by up to 0.41 and failed the export check, the QDQ graph by 0.02.

Calibration needs images preprocessed with the run's settings: a cache folder written by
``mammolens preprocess`` at the run's size (by default the cache the run was trained on,
recorded in its ``meta.json``). When the run's manifest is at hand, only its ``train``
split is used, so validation and test images never tune the quantiser.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mammolens.errors import ConfigError

log = logging.getLogger("mammolens.predict")

#: calibration images used by default (a seeded sample of the train split)
CALIBRATION_IMAGES = 128
#: images held out of calibration to check the int8 model against PyTorch
CHECK_IMAGES = 8
#: largest accepted differences of an int8 export to the float32 model on the check images:
#: probability (absolute) and localisation heatmap (sigmoid, absolute). int8 rounds every
#: activation to one of 256 levels, so these are two orders looser than float32's 1e-4 /
#: 1e-3; bench/results/int8.md reports the effect on AUC.
INT8_SCORE_TOL = 0.05
INT8_HEATMAP_TOL = 0.1


def calibration_images(
    image_size: tuple[int, int],
    source: str | Path | None,
    *,
    run_meta: dict[str, Any] | None = None,
    n: int = CALIBRATION_IMAGES + CHECK_IMAGES,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Preprocessed images ``(k, 1, H, W)`` float32 for calibration, and where they came from.

    Parameters
    ----------
    image_size
        ``(H, W)`` of the model: the cache must hold images of this size.
    source
        A cache folder (``mammolens preprocess`` output); ``None``: the run's cache
        (``run_meta["cache"]``).
    run_meta
        The run's metadata (``cache`` and ``manifest``: the train split is preferred).
    n
        At most this many images (a seeded random sample when the cache holds more).
    """
    from mammolens.data.cache import CacheError, open_cache

    meta = run_meta or {}
    if source is None:
        source = meta.get("cache")
        if not source:
            raise ConfigError("--int8 needs calibration images: give --calibration CACHE (a `mammolens preprocess` folder at the run's size)")
        if not Path(source).is_dir():
            raise ConfigError(f"{source}: the run's training cache is gone; give --calibration CACHE (a `mammolens preprocess` folder at the run's size)")
    try:
        cache = open_cache(source)
    except CacheError as e:
        raise ConfigError(f"--calibration: {e}") from None
    have = tuple(int(v) for v in cache.settings.size)
    if have != tuple(image_size):
        raise ConfigError(f"{source}: the cache holds {have[0]}x{have[1]} images but the model takes {image_size[0]}x{image_size[1]}; "
                          f"calibrate on a cache preprocessed at the run's size")
    ids = list(cache.image_ids)
    used = "all cached images"
    man = meta.get("manifest")
    if man and Path(man).is_file():
        try:
            from mammolens.data.manifest import read_manifest

            df = read_manifest(man, resolve_paths=False)
            if "split" in df.columns:
                train = set(df.loc[df["split"] == "train", "image_id"].astype(str))
                sel = [i for i in ids if i in train]
                if sel:
                    ids, used = sel, f"train split of {man}"
        except Exception as e:  # noqa: BLE001 - the manifest only narrows the choice
            log.warning("%s: cannot read the run's manifest to pick the train split (%s); calibrating on all cached images", man, e)
    if not ids:
        raise ConfigError(f"{source}: the cache holds no image to calibrate on")
    rng = np.random.default_rng(seed)
    if len(ids) > n:
        ids = [ids[i] for i in sorted(rng.choice(len(ids), size=n, replace=False))]
    x = np.stack([cache.load_image(i) for i in ids]).astype(np.float32)[:, None]
    return x, {"cache": str(Path(source).resolve()), "images": len(ids), "chosen_from": used, "seed": seed}


def quantize_onnx(onnx_path: str | Path, out_onnx: str | Path, images: np.ndarray) -> dict[str, Any]:
    """ONNX Runtime static int8 quantisation (QDQ, per-channel weights) of the ONNX graph."""
    import tempfile

    try:
        import onnxruntime
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise ConfigError(f"--format onnx --int8 needs onnxruntime ({e}); pip install 'mammolens[deploy]'") from None

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(images[i : i + 1] for i in range(len(images)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"image": x}

    with tempfile.TemporaryDirectory(prefix="mammolens-quant-") as td:
        pre = Path(td) / "pre.onnx"
        # shape inference + graph clean-up first, as ONNX Runtime's guide recommends
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out_onnx), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return {"tool": f"onnxruntime {onnxruntime.__version__}",
            "method": "onnxruntime.quantization.quantize_static (QDQ, per-channel int8 weights, uint8 activations, min-max)"}


def quantize_openvino(onnx_path: str | Path, out_xml: str | Path, images: np.ndarray) -> dict[str, Any]:
    """:func:`quantize_onnx`, then the QDQ graph converted to OpenVINO IR ``out_xml``."""
    import tempfile

    try:
        import openvino as ov
    except ImportError as e:
        raise ConfigError(f"--format openvino --int8 needs the openvino package ({e}); pip install 'mammolens[deploy]'") from None
    with tempfile.TemporaryDirectory(prefix="mammolens-quant-") as td:
        qdq = Path(td) / "int8.onnx"
        rec = quantize_onnx(onnx_path, qdq, images)
        ov.save_model(ov.convert_model(str(qdq)), str(out_xml), compress_to_fp16=False)
    rec["method"] += f"; converted to OpenVINO IR (openvino {ov.__version__})"
    return rec


__all__ = ["CALIBRATION_IMAGES", "CHECK_IMAGES", "INT8_HEATMAP_TOL", "INT8_SCORE_TOL", "calibration_images",
           "quantize_onnx", "quantize_openvino"]
