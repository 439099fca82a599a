"""``mammolens export``: a trained run -> a deployable model folder (ONNX or OpenVINO IR).

The folder is a Triton Inference Server model directory and carries everything a
deployment needs besides the runtime::

    OUT/config.pbtxt              Triton model configuration (onnxruntime / openvino backend)
    OUT/1/model.onnx              --format onnx: the graph (opset 18, dynamic batch)
    OUT/1/model.xml, model.bin    --format openvino: OpenVINO IR (fp32 weights)
    OUT/mammolens_export.json     input/output contract, preprocessing settings,
                                  operating point, the run's configuration, provenance
                                  and the export check (max difference to PyTorch)

The graph takes ``image``: float32 ``(batch, 1, H, W)``, a mammogram preprocessed with the
run's settings (``preprocess`` in the JSON: ``mammolens preprocess`` / ``Predictor.preprocess``
produce it) with values in [0, 1]; intensity normalisation is inside the graph. It returns
``logit`` ``(batch,)`` (malignancy probability = sigmoid(logit)), ``attention`` and
``localization`` ``(batch, h, w)`` on the stride-32 grid, and for a run with the benign
output ``benign_logit`` ``(batch,)`` (see docs/deploy.md).

Every export is checked before it is written: the runtime's outputs on a test batch must
match PyTorch's (scores to 1e-4, localisation heatmaps to 1e-3), else the export fails.
:func:`load_exported` (used by :func:`mammolens.predict.load_predictor`, hence by
``mammolens predict`` and the service) loads the folder back as a
:class:`~mammolens.predict.Predictor`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mammolens.errors import CheckpointError, ConfigError
from mammolens.predict.backends import EXPORT_FILE, EXPORT_FORMAT_VERSION, EXPORT_FORMATS
from mammolens.predict.predictor import load_exported, read_export

FORMATS = EXPORT_FORMATS
FORMAT_VERSION = EXPORT_FORMAT_VERSION
#: largest accepted differences to PyTorch (probability; localisation heatmap)
SCORE_TOL = 1e-4
HEATMAP_TOL = 1e-3
_FILES = {"onnx": "model.onnx", "openvino": "model.xml"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _operating_point(operating_point: float | None, evaluation: str | Path | None, level: str) -> dict[str, Any] | None:
    if operating_point is not None:
        if not 0.0 <= float(operating_point) <= 1.0:
            raise ConfigError(f"operating point must be a probability in [0, 1], got {operating_point}")
        return {"threshold": float(operating_point), "level": level, "chosen_on": "given on the command line", "source": None}
    if evaluation is None:
        return None
    p = Path(evaluation)
    if p.is_dir():
        p = p / "results.json"
    try:
        res = json.loads(p.read_text(encoding="utf-8"))
        op = res["performance"][level]["operating_point"]
        thr = float(op["threshold"])
    except FileNotFoundError:
        raise ConfigError(f"{p}: evaluation results not found (give the folder `mammolens evaluate` wrote)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{p}: no {level}-level operating point in these evaluation results ({type(e).__name__}: {e})") from None
    return {"threshold": thr, "level": level, "method": op.get("method"), "chosen_on": op.get("chosen_on"), "source": str(p.resolve())}


def _triton_config(fmt: str, name: str, h: int, w: int, gh: int, gw: int, max_batch: int, *, benign: bool = False) -> str:
    platform = 'platform: "onnxruntime_onnx"' if fmt == "onnx" else 'backend: "openvino"'
    benign_out = (',\n  { name: "benign_logit", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] } }'
                  if benign else "")
    return f"""# Triton Inference Server model configuration written by `mammolens export`.
# Put this folder into a model repository (e.g. models/{name}/) and start
#   tritonserver --model-repository=models
# Input: a mammogram preprocessed as mammolens_export.json "preprocess" says, float32 in [0, 1].
name: "{name}"
{platform}
max_batch_size: {max_batch}
input [
  {{ name: "image", data_type: TYPE_FP32, dims: [ 1, {h}, {w} ] }}
]
output [
  {{ name: "logit", data_type: TYPE_FP32, dims: [ 1 ], reshape: {{ shape: [ ] }} }},
  {{ name: "attention", data_type: TYPE_FP32, dims: [ {gh}, {gw} ] }},
  {{ name: "localization", data_type: TYPE_FP32, dims: [ {gh}, {gw} ] }}{benign_out}
]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""


def _check_images(h: int, w: int, n: int = 2) -> np.ndarray:
    """A test batch: a smooth 'breast' with a bright blob, and noise (values in [0, 1])."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    breast = np.clip(1.2 - ((xx / w) ** 2 + ((yy - h / 2) / (0.6 * h)) ** 2), 0, 1) * 0.6
    blob = 0.4 * np.exp(-(((xx - 0.3 * w) ** 2 + (yy - 0.5 * h) ** 2) / (2 * (0.05 * w) ** 2 + 1e-6)))
    imgs = [np.clip(breast + blob, 0, 1), rng.random((h, w), dtype=np.float32)]
    return np.stack((imgs * n)[:n]).astype(np.float32)[:, None]


def export_run(
    run: str | Path,
    fmt: str,
    out: str | Path,
    *,
    operating_point: float | None = None,
    evaluation: str | Path | None = None,
    level: str = "exam",
    max_batch: int = 8,
    int8: bool = False,
    calibration: str | Path | None = None,
    calibration_size: int | None = None,
) -> dict[str, Any]:
    """Export a trained run to ``out`` (see the module docstring); return the export record.

    Parameters
    ----------
    run
        Run folder or ``.ckpt`` file.
    fmt
        ``onnx`` or ``openvino``.
    out
        The folder to write (created; files of an earlier export there are replaced).
    operating_point
        The decision threshold on the probability to record (e.g. the one a site chose).
    evaluation
        ``mammolens evaluate`` output (folder or ``results.json``) whose validation-chosen
        operating point at ``level`` is recorded (when ``operating_point`` is not given).
    level
        ``image``, ``breast`` or ``exam``: the level the operating point applies to.
    max_batch
        Triton's ``max_batch_size`` (the graph itself takes any batch).
    int8
        Post-training int8 quantisation (:mod:`mammolens.predict.quantize`; an option,
        never the default). The check then compares with the float32 model on images
        of the calibration source held out of calibration, at the looser int8 tolerances.
    calibration
        Cache folder of calibration images (default: the run's training cache).
    calibration_size
        Calibration images (default :data:`~mammolens.predict.quantize.CALIBRATION_IMAGES`).
    """
    import torch

    from mammolens import __version__
    from mammolens.predict.backends import compare_outputs, export_onnx
    from mammolens.predict.predictor import load_predictor

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if level not in ("image", "breast", "exam"):
        raise ConfigError(f"level must be image, breast or exam, got {level!r}")
    if Path(run).is_dir() and (Path(run) / EXPORT_FILE).is_file():
        raise ConfigError(f"{run}: this is an export folder already; export from the training run folder")
    t0 = time.perf_counter()
    op = _operating_point(operating_point, evaluation, level)
    pred = load_predictor(run)  # CheckpointError names a missing / corrupt run
    model = pred.model
    assert model is not None
    model = model.float().cpu().eval().to(memory_format=torch.contiguous_format)
    h, w = pred.image_size
    # calibration images first: a bad --calibration leaves an earlier export untouched
    quant: dict[str, Any] | None = None
    x_check = None
    if int8:
        from mammolens.predict import quantize as qz

        n_cal = int(calibration_size or qz.CALIBRATION_IMAGES)
        if n_cal < 1:
            raise ConfigError(f"calibration size must be >= 1, got {n_cal}")
        imgs, src = qz.calibration_images((h, w), calibration, run_meta=pred.meta, n=n_cal + qz.CHECK_IMAGES)
        if len(imgs) >= 2 * qz.CHECK_IMAGES:  # check on images the quantiser has not seen
            x_check, imgs = imgs[-qz.CHECK_IMAGES :], imgs[: -qz.CHECK_IMAGES]
            check_on = f"{len(x_check)} cached images held out of calibration"
        else:
            x_check = imgs
            check_on = f"the {len(imgs)} calibration images (too few to hold some out)"
        quant = {"precision": "int8", "calibration": {**src, "images": int(len(imgs))}, "check_on": check_on}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    version_dir = out / "1"
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir()
    with tempfile.TemporaryDirectory(prefix="mammolens-export-") as td:
        onnx_tmp = export_onnx(model, Path(td) / "model.onnx", (h, w))
        if int8 and quant is not None:
            from mammolens.predict import quantize as qz

            if fmt == "onnx":
                quant.update(qz.quantize_onnx(onnx_tmp, version_dir / "model.onnx", imgs))
            else:
                quant.update(qz.quantize_openvino(onnx_tmp, version_dir / "model.xml", imgs))
        elif fmt == "onnx":
            shutil.move(str(onnx_tmp), version_dir / "model.onnx")
        else:
            try:
                import openvino as ov
            except ImportError as e:
                raise ConfigError(f"--format openvino needs the openvino package ({e}); pip install openvino") from None
            ov.save_model(ov.convert_model(str(onnx_tmp)), str(version_dir / "model.xml"), compress_to_fp16=False)
    model_file = version_dir / _FILES[fmt]

    # the check: the runtime, loaded from the written files, against PyTorch
    be = _runtime(fmt, model_file)
    x = _check_images(h, w) if x_check is None else x_check
    with torch.inference_mode():
        ref = {k: v.float().numpy() for k, v in model(torch.from_numpy(x)).items()}
    got = be(x)
    diff = compare_outputs(got, ref)
    if int8:
        from mammolens.predict.quantize import INT8_HEATMAP_TOL, INT8_SCORE_TOL

        score_tol, heatmap_tol = INT8_SCORE_TOL, INT8_HEATMAP_TOL
    else:
        score_tol, heatmap_tol = SCORE_TOL, HEATMAP_TOL
    has_benign = "benign_logit" in ref
    if has_benign and "benign_logit" not in got:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise CheckpointError(f"{run}: the {fmt} export lost the benign output (benign_logit); nothing written")
    ok = (diff["score"] <= score_tol and diff["localization_map"] <= heatmap_tol
          and diff.get("benign_score", 0.0) <= score_tol)
    if not ok:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise CheckpointError(
            f"{run}: the {fmt}{' int8' if int8 else ''} export does not reproduce the PyTorch model (max score difference "
            f"{diff['score']:.2e} > {score_tol:g} or heatmap difference {diff['localization_map']:.2e} > {heatmap_tol:g}); nothing written"
        )
    gh, gw = ref["localization"].shape[-2:]
    (out / "config.pbtxt").write_text(
        _triton_config(fmt, out.name or "mammolens", h, w, gh, gw, max_batch, benign=has_benign), encoding="utf-8"
    )
    record: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "file": str(model_file.relative_to(out)),
        "sha256": _sha256(model_file),
        "model": pred.name,
        "precision": "int8" if int8 else "fp32",
        "quantization": quant,
        "input": {
            "name": "image",
            "dtype": "float32",
            "shape": ["batch", 1, h, w],
            "layout": "NCHW",
            "range": [0.0, 1.0],
            "meaning": "the mammogram preprocessed with 'preprocess' (crop to the breast, flip to one side, window, resize); "
            "intensity normalisation is inside the graph",
        },
        "outputs": {
            "logit": {"shape": ["batch"], "meaning": "image malignancy logit; probability = 1 / (1 + exp(-logit))"},
            "attention": {"shape": ["batch", int(gh), int(gw)], "meaning": "attention-pooling weights (sum to 1 per image) on the stride-32 grid"},
            "localization": {"shape": ["batch", int(gh), int(gw)], "meaning": "dense malignancy logits on the stride-32 grid (heatmap = sigmoid, upsampled bilinearly to H x W)"},
            **({"benign_logit": {"shape": ["batch"], "meaning": "image logit of a benign finding (independent of the malignant one); "
                                 "probability = 1 / (1 + exp(-logit))"}} if has_benign else {}),
        },
        "rollups": {"breast_score": "max of the image probabilities over the breast's views",
                    "exam_score": "max over the exam's breasts"},
        "preprocess": pred.settings.model_dump(mode="json"),
        "operating_point": op,
        "config": pred.config.model_dump(mode="json"),
        "source": {
            "checkpoint": str(Path(pred.checkpoint).resolve()),
            "checkpoint_sha256": _sha256(Path(pred.checkpoint)),
            "manifest_hash": pred.meta.get("manifest_hash"),
            "trained_with": pred.meta.get("version"),
        },
        "exported_with": {"mammolens": __version__, "torch": str(torch.__version__), "runtime": _runtime_version(fmt)},
        "check": {"max_abs_diff": diff, "tolerance": {"score": score_tol, "localization_map": heatmap_tol},
                  "inputs": quant["check_on"] if quant else f"{x.shape[0]} synthetic images of {h}x{w}", "passed": True},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    record["out"] = str(out)
    return record


def _runtime_version(fmt: str) -> str | None:
    try:
        if fmt == "onnx":
            import onnxruntime

            return f"onnxruntime {onnxruntime.__version__}"
        import openvino

        return f"openvino {openvino.__version__}"
    except ImportError:
        return None


def _runtime(fmt: str, model_file: Path) -> Any:
    from mammolens.predict.backends import runtime_backend

    return runtime_backend(fmt, model_file)


__all__ = ["EXPORT_FILE", "FORMATS", "export_run", "load_exported", "read_export"]
