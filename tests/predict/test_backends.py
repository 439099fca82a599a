"""Inference backends against eager PyTorch: scores to 1e-4, heatmaps to 1e-3; fall-backs."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from mammolens.models import create_model
from mammolens.predict import load_predictor, predict
from mammolens.predict.backends import BACKENDS, EagerBackend, compare_outputs, make_backend

pytestmark = pytest.mark.own_process

SIZE = (64, 48)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mammolens.serve.scoring import write_untrained_run

    return write_untrained_run(tmp_path_factory.mktemp("bk") / "run", image_size=SIZE, seed=3)


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    out = []
    for i in range(n):
        blob = np.exp(-((xx - 10 - 8 * i) ** 2 + (yy - 30) ** 2) / 30.0)
        out.append(np.clip(0.3 + 0.5 * blob + 0.05 * rng.standard_normal(SIZE), 0, 1).astype(np.float32))
    return out


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "eager"])
def test_backend_matches_eager(run, name):
    ref = load_predictor(run)
    p = load_predictor(run, backend=name)
    assert p.backend.name == name and p.backend.fallback_reason is None
    imgs = _images()
    a = ref.predict_arrays(imgs, heatmaps=True, gradcam=False)
    b = p.predict_arrays(imgs, heatmaps=True, gradcam=False)
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra.score - rb.score) <= 1e-4
        for kind in ("attention", "localization"):
            assert rb.maps[kind].shape == SIZE
            assert np.max(np.abs(ra.maps[kind] - rb.maps[kind])) <= 1e-3, kind
    # a different batch size (the last, smaller batch of a run) gives the same scores
    one = p.predict_arrays(imgs[:1])
    assert abs(one[0].score - a[0].score) <= 1e-4


@pytest.mark.parametrize("model_name", ["baseline_tiny", "attention_tiny"])
def test_runtime_backends_on_registry_models(model_name):
    m = create_model(model_name).eval()
    x = torch.rand(2, 1, *SIZE)
    ref = make_backend("eager", m, SIZE)(x)
    for name in ("onnx", "openvino"):
        d = compare_outputs(make_backend(name, m, SIZE, fallback=False)(x), ref)
        assert d["score"] <= 1e-4 and d["localization_map"] <= 1e-3, (name, d)


def test_missing_runtime_falls_back_with_reason(monkeypatch, caplog):
    m = create_model("attention_tiny").eval()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING, logger="mammolens.predict"):
        be = make_backend("onnx", m, SIZE)
    assert isinstance(be, EagerBackend) and be.requested == "onnx"
    assert "onnxruntime" in be.fallback_reason
    assert "onnx unavailable" in caplog.text and "onnxruntime" in caplog.text
    with pytest.raises(Exception, match="onnxruntime"):
        make_backend("onnx", m, SIZE, fallback=False)


def test_compiled_without_compiler_falls_back(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    be = make_backend("compiled", create_model("attention_tiny").eval(), SIZE)
    assert be.name == "eager" and "C++ compiler" in be.fallback_reason


def test_unknown_backend_is_an_error():
    from mammolens.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backend"):
        make_backend("tensorrt", create_model("attention_tiny").eval(), SIZE)


def test_predict_backend_and_decode_workers_agree(run, tmp_path):
    """Whole-process predict: ONNX + 2 sandboxed decode workers == eager in process (same order)."""
    import cv2

    files = []
    for i, img in enumerate(_images(5, seed=1)):
        f = tmp_path / "in" / f"img{i}.png"
        f.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(f), np.round(np.pad(img, ((6, 6), (0, 12))) * 255).astype(np.uint8))
        files.append(f)
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    ref = predict(run, [tmp_path / "in"], tmp_path / "a.csv", progress=False, workers=0, batch_size=2)
    got = predict(run, [tmp_path / "in"], tmp_path / "b.csv", progress=False, workers=2, backend="onnx",
                  batch_size=2, heatmaps_dir=tmp_path / "hm")
    assert list(got["image_id"]) == list(ref["image_id"]) == [f"img{i}" for i in range(5)]
    assert np.max(np.abs(got["score"].to_numpy() - ref["score"].to_numpy())) <= 1e-4
    assert got.attrs["n_rejected"] == 1 and "broken.png" in got.attrs["qc"].rejected[0].path
    for h, o in zip(got["heatmap"], got["overlay"], strict=True):
        assert h.endswith(".npz") and o.endswith(".png")
        assert cv2.imread(o).shape[:2] == (76, 60)  # drawn on the original (un-cropped) image


def test_eager_runs_cpu_batches_image_by_image_with_the_same_outputs():
    """On the CPU eager splits a batch into single-image passes (batching costs time
    there); the outputs equal one pass over the whole batch."""
    torch.manual_seed(0)
    model = create_model("attention_tiny").eval()
    x = torch.from_numpy(np.stack(_images(3))[:, None])
    split = EagerBackend(model)
    assert split.micro_batch == 1
    whole = EagerBackend(model, micro_batch=None)  # the whole batch in one pass
    assert whole.micro_batch is None
    a, b = split(x), whole(x)
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].shape[0] == 3
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=1e-5)
    two = EagerBackend(model, micro_batch=2)(x)
    np.testing.assert_allclose(two["logit"], b["logit"], atol=1e-5, rtol=1e-5)
    for bad in (0, -1, 1.5, True, "one"):
        with pytest.raises(ValueError, match="micro_batch"):
            EagerBackend(model, micro_batch=bad)
