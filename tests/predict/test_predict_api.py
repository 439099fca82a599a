"""predict(): tables and roll-ups, heatmap geometry, QC rows, checkpoint errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mammolens.data.heatmap_io import heatmap_kinds, load_heatmap
from mammolens.errors import CheckpointError
from mammolens.predict import load_predictor, predict
from mammolens.testing.toydata import make_toy_cache, make_toy_cohort
from mammolens.train.api import train


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("toyp")
    manifest = make_toy_cohort(d, n_patients=10, size=(96, 80), seed=2)
    make_toy_cache(manifest, d / "cache", size=(64, 48))
    res = train(manifest, d / "cache", config="tiny", out=d / "run", overrides=["train.max_epochs=1"], progress=False)
    return manifest, d / "cache", res.run_dir


def test_predict_manifest_with_cache_rollups(toy_run, tmp_path):
    manifest, cache, run = toy_run
    out = tmp_path / "preds" / "p.csv"
    df = predict(run, [manifest], out, cache=cache, progress=False)
    m = pd.read_csv(manifest)
    assert len(df) == len(m) and set(df["image_id"]) == set(m["image_id"])
    disk = pd.read_csv(out)
    expected = ["image_id", "patient_id", "study_id", "laterality", "view", "score", "breast_score", "exam_score", "heatmap", "overlay", "model"]
    assert list(disk.columns[: len(expected)]) == expected
    assert disk["score"].between(0, 1).all()
    assert (disk["model"] == "attention_tiny").all()
    # roll-ups: max over the breast's views, max over the exam's breasts
    for (_p, _s, _lat), g in disk.groupby(["patient_id", "study_id", "laterality"]):
        assert np.allclose(g["breast_score"], g["score"].max())
    for _, g in disk.groupby(["patient_id", "study_id"]):
        assert np.allclose(g["exam_score"], g["score"].max())
    br = pd.read_csv(tmp_path / "preds" / "p_breast.csv")
    ex = pd.read_csv(tmp_path / "preds" / "p_exam.csv")
    assert len(br) == disk.groupby(["patient_id", "study_id", "laterality"]).ngroups
    assert len(ex) == disk["patient_id"].nunique()
    assert np.allclose(ex.sort_values("patient_id")["exam_score"], disk.groupby("patient_id")["score"].max().sort_index())
    assert not (tmp_path / "preds" / "p.partial.csv").exists()
    # the cache and on-the-fly preprocessing give the same scores
    df2 = predict(run, [manifest], tmp_path / "fly.csv", split="test", progress=False)
    both = df2.merge(df, on="image_id", suffixes=("_fly", "_cache"))
    assert len(both) == (m["split"] == "test").sum()
    assert np.allclose(both["score_fly"], both["score_cache"], atol=2e-3)


class BrightnessNet(nn.Module):
    """A stand-in model whose maps are the local mean brightness: tests geometry only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        nn.init.constant_(self.conv.weight, 8.0)
        nn.init.constant_(self.conv.bias, -4.0)

    def gradcam_layer(self) -> nn.Module:
        return self.conv

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.conv(F.avg_pool2d(x, 4))
        loc = feat.squeeze(1)
        b, h, w = loc.shape
        att = torch.softmax(loc.reshape(b, -1) * 4, dim=1).reshape(b, h, w)
        return {"logit": loc.reshape(b, -1).amax(dim=1), "attention": att, "localization": loc}


def test_heatmap_maximum_lands_on_planted_blob(toy_run, tmp_path):
    """Crop + flip + resize + pad are undone: the map's maximum is on the blob in the original."""
    import cv2

    _, _, run = toy_run
    p = load_predictor(run)
    p.model = BrightnessNet().eval()
    h, w = 150, 120
    yy, xx = np.mgrid[:h, :w]
    # a right breast (chest wall on the right, so preprocessing flips it), offset vertically
    breast = (((w - 1 - xx) / 95.0) ** 2 + ((yy - 80) / 60.0) ** 2) <= 1
    img = np.where(breast, 0.35, 0.0)
    bx, by = 70, 100
    img = img + breast * 0.6 * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * 4.0**2))
    f = tmp_path / "right.png"
    cv2.imwrite(str(f), np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    df = p.predict_files([f], heatmaps_dir=tmp_path / "hm")
    row = df.iloc[0]
    assert row["error"] == ""
    assert set(heatmap_kinds(row["heatmap"])) == {"attention", "localization", "gradcam"}
    for kind in ("localization", "attention", "gradcam"):
        hm, tf = load_heatmap(row["heatmap"], kind)
        assert hm.shape == (h, w)
        assert tf.flipped
        y, x = np.unravel_index(np.argmax(hm), hm.shape)
        assert abs(x - bx) <= 8 and abs(y - by) <= 8, (kind, x, y)
    assert Path(row["overlay"]).is_file()
    ov = cv2.imread(row["overlay"])
    assert ov.shape[:2] == (h, w)


def test_bad_inputs_become_qc_rows(toy_run, tmp_path):
    manifest, _, run = toy_run
    m = pd.read_csv(manifest)
    good = [str(Path(manifest).parent / p) for p in m["path"][:3]]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.zeros((64, 64), np.uint8))
    df = predict(run, [*good, bad, blank, tmp_path / "missing.dcm"], tmp_path / "out.csv", progress=False, batch_size=2)
    assert len(df) == 3 and df["score"].notna().all()
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert len(qc) == 3 and set(qc["severity"]) == {"reject"}
    assert any("not found" in r for r in qc["reason"])
    assert df.attrs["n_rejected"] == 3


@pytest.mark.timeout(300)
def test_files_that_crash_decoders_become_qc_rows(toy_run, tmp_path, crash_corpus):
    """A DICOM that aborts / segfaults python-gdcm, panics pylibjpeg-rle or carries a NaN
    window is a QC rejection; the run goes on and scores the good files."""
    manifest, _, run = toy_run
    m = pd.read_csv(manifest)
    good = [str(Path(manifest).parent / p) for p in m["path"][:2]]
    bad = [crash_corpus / f"{n}.dcm" for n in ("N4_jpeg_lossless_sof_precision_17", "N5_jpeg_lossless_bitsallocated_32",
                                               "P2_rle_segment_overrun", "S1_window_width_nan", "E3_voilut_no_lutdata")]
    df = predict(run, [bad[0], *good[:1], *bad[1:], *good[1:]], tmp_path / "out.csv", progress=False, batch_size=2)
    assert len(df) == 2 and df["score"].notna().all()
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert len(qc) == 5 and set(qc["severity"]) == {"reject"}
    reasons = " | ".join(qc["reason"])
    for fragment in ("decoder crashed (SIGSEGV)", "decoder crashed (SIGABRT)", "decoder panicked", "not finite", "KeyError"):
        assert fragment in reasons


def test_resume_skips_scored_images(toy_run, tmp_path, monkeypatch):
    manifest, cache, run = toy_run
    out = tmp_path / "r.csv"
    full = predict(run, [manifest], out, cache=cache, progress=False)
    partial = tmp_path / "r.partial.csv"
    cols = ["image_id", "patient_id", "study_id", "laterality", "view", "score", "heatmap", "overlay", "model", "path", "logit"]
    full[cols].iloc[:5].to_csv(partial, index=False)
    calls = []
    from mammolens.predict import predictor as pmod

    real = pmod.Predictor.predict_arrays

    def counting(self, images, **kw):
        calls.append(len(images))
        return real(self, images, **kw)

    monkeypatch.setattr(pmod.Predictor, "predict_arrays", counting)
    again = predict(run, [manifest], out, cache=cache, progress=False)
    assert sum(calls) == len(full) - 5
    assert len(again) == len(full)
    a = again.set_index("image_id")["score"]
    assert np.allclose(a[full["image_id"]].to_numpy(), full["score"].to_numpy(), atol=1e-6)


def test_checkpoint_errors(toy_run, tmp_path):
    _, _, run = toy_run
    with pytest.raises(CheckpointError, match="not found"):
        load_predictor(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_predictor(tmp_path / "empty")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        load_predictor(junk)
    good = (run / "checkpoints" / "best.ckpt").read_bytes()
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="trunc.ckpt"):
        load_predictor(trunc)
    # weights that do not fit the configured model
    ck = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    ck["hyper_parameters"]["config"]["model"]["arch"] = "resnet18"
    wrong = tmp_path / "wrong.ckpt"
    torch.save(ck, wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_predictor(wrong)
    torch.save({"foo": 1}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a mammolens checkpoint"):
        load_predictor(tmp_path / "foreign.ckpt")


def test_predict_arrays_for_the_service(toy_run):
    _, cache, run = toy_run
    from mammolens.data.cache import open_cache

    c = open_cache(cache)
    p = load_predictor(run)
    imgs = [c.load(i)[0] for i in c.image_ids[:3]]
    res = p.predict_arrays(imgs, heatmaps=True, gradcam=False)
    assert len(res) == 3 and all(0 <= r.score <= 1 for r in res)
    assert set(res[0].maps) == {"attention", "localization"}
    assert res[0].maps["localization"].shape == tuple(p.image_size)
    with pytest.raises(ValueError):
        p.predict_arrays([np.zeros((10, 10))])
    bad = imgs[0].astype(np.float32).copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        p.predict_arrays([imgs[1], bad])
    assert p.describe()["model"] == "attention_tiny"


def test_cli_predict_exit_codes(toy_run, tmp_path):
    from typer.testing import CliRunner

    from mammolens.cli import app

    manifest, cache, run = toy_run
    out = tmp_path / "cli" / "preds.csv"
    r = CliRunner().invoke(app, ["predict", str(run), str(manifest), "--cache", str(cache), "--split", "test", "--out", str(out), "--json", "--heatmaps", str(tmp_path / "hm"), "--no-gradcam"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["n_rejected"] == 0 and Path(info["predictions"]).exists()
    df = pd.read_csv(out)
    assert df["heatmap"].map(lambda s: Path(s).exists()).all()
    assert set(heatmap_kinds(df["heatmap"].iloc[0])) == {"attention", "localization"}
    r = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.csv"), "-q"])
    assert r.exit_code == 3
    junk = tmp_path / "junk.ckpt"
    junk.write_text("nope")
    r = CliRunner().invoke(app, ["predict", str(junk), str(manifest), "--out", str(tmp_path / "y.csv")])
    assert r.exit_code == 1 and "junk.ckpt" in r.output


@pytest.mark.slow
def test_trained_tiny_model_localises_toy_lesions(tmp_path):
    """End to end with a real trained model: AUC and heatmap maxima on the lesions."""
    from sklearn.metrics import roc_auc_score

    manifest = make_toy_cohort(tmp_path / "c", n_patients=24, size=(160, 128), mask_fraction=0.7, seed=5)
    make_toy_cache(manifest, tmp_path / "c" / "cache", size=(128, 96))
    res = train(manifest, tmp_path / "c" / "cache", config="tiny", out=tmp_path / "run", overrides=["train.max_epochs=10"], progress=False)
    df = predict(res.run_dir, [manifest], tmp_path / "p.csv", split="test", heatmaps_dir=tmp_path / "hm", progress=False)
    m = pd.read_csv(manifest).merge(df[["image_id", "score", "heatmap"]], on="image_id")
    assert roc_auc_score(m["label"], m["score"]) >= 0.9
    hits = []
    for r in m[m["lesions"].notna()].itertuples():
        le = json.loads(r.lesions)[0]
        hm, _ = load_heatmap(r.heatmap, "localization")
        y, x = np.unravel_index(np.argmax(hm), hm.shape)
        hits.append(np.hypot(x - le["cx"], y - le["cy"]) <= le["r"] + 20)
    assert hits and np.mean(hits) >= 0.7


def test_heatmap_paths_in_the_table_work_from_any_folder(toy_run, tmp_path, monkeypatch):
    """Relative --out / --heatmaps: the table's heatmap paths still open after a change of
    directory (evaluate reads them from the table's folder, not the caller's)."""
    manifest, cache, run = toy_run
    monkeypatch.chdir(tmp_path)
    df = predict(run, [manifest], Path("preds/p.csv"), cache=cache, split="test", heatmaps_dir=Path("hm"), progress=False)
    assert len(df) and all(Path(p).is_absolute() for p in df["heatmap"])
    monkeypatch.chdir(run)
    assert all(Path(p).is_file() for p in pd.read_csv(tmp_path / "preds" / "p.csv")["heatmap"])


def test_test_time_vflip_averages_the_image_and_its_flip(toy_run):
    """predict.tta=[vflip]: the logit is the mean over the image and its top-bottom flip, the
    localisation map the mean of the map and the flipped-back map of the flip."""
    _, cache, run = toy_run
    from mammolens.data.cache import open_cache

    c = open_cache(cache)
    img = c.load(c.image_ids[0])[0]
    plain = load_predictor(run)
    a = plain.predict_arrays([img, img[::-1].copy()], heatmaps=True, gradcam=False)
    tta = load_predictor(run)
    tta.config.predict.tta = ["vflip"]
    b = tta.predict_arrays([img], heatmaps=True, gradcam=False)[0]
    assert b.logit == pytest.approx((a[0].logit + a[1].logit) / 2, abs=1e-5)
    from scipy.special import expit, logit

    # the map is a probability: the logits are averaged
    la, lb = (logit(np.clip(m, 1e-6, 1 - 1e-6)) for m in (a[0].maps["localization"], a[1].maps["localization"][::-1]))
    assert np.allclose(b.maps["localization"], expit((la + lb) / 2), atol=1e-3)
    assert abs(b.logit - a[0].logit) > 1e-7  # the flip changed something: the test can fail


def test_decode_pool_is_started_before_the_model_and_closed(toy_run, tmp_path, monkeypatch):
    """predict() starts its decode workers before loading the model (their start-up
    overlaps the loading) and closes them; a caller's pool is used and left open."""
    import mammolens.predict.predictor as predictor_mod
    from mammolens.predict.scoring import start_decode_pool

    manifest, _, run = toy_run
    m = pd.read_csv(manifest)
    files = [str(Path(manifest).parent / p) for p in m["path"][:4]]
    events: list[str] = []
    pools = []
    real_start, real_load = start_decode_pool, predictor_mod.load_predictor

    def start(n):
        events.append("pool")
        pools.append(real_start(n))
        return pools[-1]

    def load(*a, **k):
        events.append("model")
        return real_load(*a, **k)

    monkeypatch.setattr("mammolens.predict.scoring.start_decode_pool", start)
    monkeypatch.setattr(predictor_mod, "load_predictor", load)
    df = predict(run, files, tmp_path / "a.csv", progress=False, batch_size=2)
    assert events == ["pool", "model"] and len(df) == 4
    assert pools[0]._executor is None  # closed
    # a cache-only run starts no decode workers
    events.clear()
    manifest2, cache, _ = toy_run
    predict(run, [manifest2], tmp_path / "c.csv", cache=cache, progress=False)
    assert events == ["model"]
    # the caller's pool: used for every call, left open, same scores as decoding in process
    with real_start(1) as pool:
        a = predict(run, files, tmp_path / "p1.csv", progress=False, decode_pool=pool)
        b = predict(run, files, tmp_path / "p2.csv", progress=False, decode_pool=pool)
        assert pool._executor is not None
    c = predict(run, files, tmp_path / "p0.csv", progress=False, workers=0)
    for other in (b, c):
        np.testing.assert_allclose(a.set_index("image_id")["score"], other.set_index("image_id").loc[a["image_id"], "score"], atol=1e-6)
