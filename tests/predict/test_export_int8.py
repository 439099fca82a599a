"""mammolens export --int8: quantised graphs, their agreement with float32, calibration errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from mammolens.cli import app
from mammolens.predict import load_predictor
from mammolens.predict.export import export_run, read_export
from mammolens.predict.quantize import INT8_HEATMAP_TOL, INT8_SCORE_TOL

pytestmark = pytest.mark.own_process

SIZE = (64, 48)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mammolens.serve.scoring import write_untrained_run
    from mammolens.testing.toydata import make_toy_cache, make_toy_cohort

    d = tmp_path_factory.mktemp("q")
    man = make_toy_cohort(d / "cohort", n_patients=8, size=(96, 80), seed=3)
    cache = make_toy_cache(man, d / "cache", size=SIZE)
    run = write_untrained_run(d / "run", image_size=SIZE, seed=5)
    return run, cache


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_export_agrees_with_float32(setup, tmp_path, fmt):
    run, cache = setup
    out = tmp_path / f"int8_{fmt}"
    rec = export_run(run, fmt, out, int8=True, calibration=cache.root, calibration_size=8)
    disk = read_export(out)
    assert disk["precision"] == "int8" and disk["quantization"]["calibration"]["images"] == 8
    assert disk["check"]["passed"] and "held out" in disk["check"]["inputs"]
    assert disk["check"]["tolerance"] == {"score": INT8_SCORE_TOL, "localization_map": INT8_HEATMAP_TOL}
    # the graph really is quantised (not the float32 graph under another name)
    if fmt == "onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(out / disk["file"])).graph.node}
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    else:
        import openvino as ov

        ops = {op.get_type_name() for op in ov.Core().read_model(str(out / disk["file"])).get_ops()}
        assert "FakeQuantize" in ops
    # every cached image: the int8 export against the float32 PyTorch model
    x = [cache.load_image(i) for i in cache.image_ids]
    ref = load_predictor(run).predict_arrays(x, heatmaps=True, gradcam=False)
    got = load_predictor(out).predict_arrays(x, heatmaps=True, gradcam=False)
    ds = np.abs(np.array([r.score for r in ref]) - np.array([g.score for g in got]))
    assert ds.max() <= INT8_SCORE_TOL, ds
    assert rec["check"]["max_abs_diff"]["score"] <= INT8_SCORE_TOL


def test_int8_calibration_errors(setup, tmp_path):
    run, cache = setup
    # an untrained run records no training cache: calibration images must be given
    with pytest.raises(Exception, match="--int8 needs calibration images"):
        export_run(run, "onnx", tmp_path / "a", int8=True)
    from mammolens.testing.toydata import make_toy_cache

    other = make_toy_cache(cache.root.parent / "cohort" / "manifest.csv", tmp_path / "cache32", size=(32, 32))
    with pytest.raises(Exception, match="32x32 images but the model takes 64x48"):
        export_run(run, "onnx", tmp_path / "b", int8=True, calibration=other.root)
    assert not (tmp_path / "b").exists()  # nothing written
    r = CliRunner().invoke(app, ["export", str(run), "--format", "onnx", "--int8", "--calibration", str(tmp_path / "nope"),
                                 "--out", str(tmp_path / "c")], env={"COLUMNS": "300"})
    assert r.exit_code == 1 and "cache folder not found" in " ".join(r.output.split())
