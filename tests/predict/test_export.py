"""mammolens export: round trip through the runtime, the record, bad inputs (one-line errors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mammolens.cli import app
from mammolens.predict import load_predictor, predict
from mammolens.predict.export import EXPORT_FILE, export_run, read_export

pytestmark = pytest.mark.own_process

SIZE = (64, 48)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mammolens.serve.scoring import write_untrained_run

    return write_untrained_run(tmp_path_factory.mktemp("ex") / "run", image_size=SIZE, seed=5)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_export_round_trip(run, tmp_path, fmt):
    import cv2

    out = tmp_path / f"deploy_{fmt}"
    rec = export_run(run, fmt, out, operating_point=0.42)
    disk = read_export(out)
    assert disk["format"] == fmt and (out / disk["file"]).is_file()
    assert disk["precision"] == "fp32" and disk["quantization"] is None  # int8 only when asked for
    assert disk["input"]["shape"] == ["batch", 1, *SIZE] and disk["preprocess"]["size"] == list(SIZE)
    assert disk["operating_point"]["threshold"] == 0.42 and disk["operating_point"]["level"] == "exam"
    assert disk["check"]["passed"] and rec["check"]["max_abs_diff"]["score"] <= 1e-4
    pbtxt = (out / "config.pbtxt").read_text()
    assert ('onnxruntime_onnx' if fmt == "onnx" else 'backend: "openvino"') in pbtxt and f"dims: [ 1, {SIZE[0]}, {SIZE[1]} ]" in pbtxt

    # the runtime directly, as a deployment would use it (no mammolens model code)
    x = np.random.default_rng(0).random((3, 1, *SIZE), dtype=np.float32)
    if fmt == "onnx":
        import onnxruntime as ort

        logit = ort.InferenceSession(str(out / disk["file"]), providers=["CPUExecutionProvider"]).run(["logit"], {"image": x})[0]
    else:
        import openvino as ov

        cm = ov.Core().compile_model(str(out / disk["file"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        logit = cm({"image": x})[cm.output("logit")]
    ref = load_predictor(run).predict_arrays(list(x[:, 0]))
    assert np.allclose(1 / (1 + np.exp(-logit)), [r.score for r in ref], atol=1e-4)

    # predict through the export folder == predict through the run (files on the fly)
    files = []
    for i in range(3):
        f = tmp_path / "in" / f"i{i}.png"
        f.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(f), np.round(np.pad(x[i, 0], ((4, 4), (0, 8))) * 255).astype(np.uint8))
        files.append(f)
    a = predict(run, files, tmp_path / "a.csv", progress=False, workers=0)
    b = predict(out, files, tmp_path / "b.csv", progress=False, workers=0, heatmaps_dir=tmp_path / "hm")
    assert np.allclose(a["score"], b["score"], atol=1e-4)
    p = load_predictor(out)
    assert p.model is None and p.operating_point["threshold"] == 0.42 and p.describe()["backend"]["backend"] == fmt


def test_export_records_evaluated_operating_point(run, tmp_path):
    ev = tmp_path / "evaluation"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps({"performance": {"exam": {"operating_point": {"threshold": 0.17, "method": "youden", "chosen_on": "val"}}}}))
    rec = export_run(run, "onnx", tmp_path / "d", evaluation=ev)
    assert rec["operating_point"]["threshold"] == 0.17 and rec["operating_point"]["chosen_on"] == "val"


def _cli(*args):
    r = CliRunner().invoke(app, list(map(str, args)), env={"COLUMNS": "300"})
    return r.exit_code, " ".join(r.output.split())


def test_export_cli_and_bad_inputs(run, tmp_path):
    code, text = _cli("export", run, "--format", "onnx", "--out", tmp_path / "ok")
    assert code == 0 and "export: attention_tiny" in text and (tmp_path / "ok" / EXPORT_FILE).is_file()

    code, text = _cli("export", tmp_path / "missing", "--format", "onnx", "--out", tmp_path / "x")
    assert code == 1 and "missing" in text and "not found" in text and "Traceback" not in text
    corrupt = tmp_path / "corrupt" / "checkpoints"
    corrupt.mkdir(parents=True)
    (corrupt / "best.ckpt").write_bytes(b"not a checkpoint")
    code, text = _cli("export", tmp_path / "corrupt", "--format", "openvino", "--out", tmp_path / "x")
    assert code == 1 and "best.ckpt" in text and "not a readable mammolens checkpoint" in text
    code, text = _cli("export", run, "--format", "tflite", "--out", tmp_path / "x")
    assert code == 2 and "tflite" in text
    code, text = _cli("export", run, "--format", "onnx", "--out", tmp_path / "x", "--operating-point", "1.5")
    assert code == 1 and "operating point" in text
    assert not (tmp_path / "x" / EXPORT_FILE).exists()
    # a broken export folder is refused by the loaders with the file named
    (tmp_path / "ok" / EXPORT_FILE).write_text("{not json")
    code, text = _cli("predict", tmp_path / "ok", tmp_path, "--out", tmp_path / "p.csv")
    assert code == 1 and EXPORT_FILE in text and "not valid JSON" in text


def test_service_scorer_loads_an_export(run, tmp_path):
    """The service's model loading (PredictorScorer -> load_predictor) takes an export folder."""
    import cv2

    from mammolens.serve.scoring import PredictorScorer

    out = tmp_path / "deploy"
    export_run(run, "onnx", out)
    files = []
    for i in range(2):
        f = tmp_path / f"s{i}.png"
        img = np.zeros((70, 56), np.uint8)
        img[5:65, : 30 + 10 * i] = 120 + 40 * i
        cv2.imwrite(str(f), img)
        files.append(f)
    res = PredictorScorer(out).score_files(files, tmp_path / "hm")
    assert set(res) == set(files)
    ref = load_predictor(run).predict_files([str(f) for f in files])
    for f, r in res.items():
        assert r.heatmap is not None and r.heatmap.is_file()
        assert abs(r.score - float(ref.set_index("path").loc[str(f), "score"])) <= 1e-4


def test_export_keeps_the_benign_output(tmp_path):
    """A run with the benign output exports benign_logit too; the export folder predicts it."""
    from mammolens.serve.scoring import write_untrained_run

    brun = write_untrained_run(tmp_path / "brun", image_size=SIZE, seed=6, overrides={"model.benign_output": True})
    out = tmp_path / "deploy_benign"
    rec = export_run(brun, "onnx", out)
    assert "benign_logit" in rec["outputs"] and rec["check"]["max_abs_diff"]["benign_score"] <= 1e-4
    assert 'name: "benign_logit"' in (out / "config.pbtxt").read_text()
    x = list(np.random.default_rng(1).random((2, *SIZE), dtype=np.float32))
    ref = load_predictor(brun).predict_arrays(x)
    got = load_predictor(out).predict_arrays(x)
    assert load_predictor(out).has_benign
    for a, b in zip(ref, got, strict=True):
        assert a.benign_score is not None and abs(a.benign_score - b.benign_score) <= 1e-4
