"""predict: overlays in the original geometry (also from a cache), the top-K region table,
and --dicom-out / --stow (the service's DICOM objects from the command line)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from mammolens.cli import app
from mammolens.data.synthetic import synthesize_cohort
from mammolens.predict import load_predictor, predict
from mammolens.serve.scoring import write_untrained_run
from mammolens.testing.toydata import make_toy_cache, make_toy_cohort


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("toyd")
    manifest = make_toy_cohort(d, n_patients=4, size=(96, 80), seed=4)
    make_toy_cache(manifest, d / "cache", size=(64, 48))
    # an untrained model: these tests check geometry and files, not accuracy
    run = write_untrained_run(d / "run", image_size=(64, 48))
    return manifest, d / "cache", run


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    synthesize_cohort(d, n_patients=1, seed=11)
    return d / "dicom"


def _grey(path: str) -> np.ndarray:
    import cv2

    return cv2.imread(path, cv2.IMREAD_GRAYSCALE).astype(np.float32)


def test_cache_overlays_in_original_geometry_and_regions(toy_run, tmp_path):
    from mammolens.io.images import read_image

    manifest, cache, run = toy_run
    out = tmp_path / "p.csv"
    df = predict(run, [manifest], out, cache=cache, heatmaps_dir=tmp_path / "hm", progress=False, top_k=2)
    m = pd.read_csv(manifest).set_index("image_id")
    lat_r = 0
    for r in df.itertuples(index=False):
        src = read_image(str(Path(manifest).parent / m.loc[r.image_id, "path"])).pixels
        ov = _grey(r.overlay)
        assert ov.shape == src.shape, "overlay not in the original geometry"
        if r.laterality == "R":
            lat_r += 1
            # the right breast is flipped in the cache; the overlay shows it as stored
            a, b = ov - ov.mean(), src - src.mean()
            same = float((a * b).sum())
            mirrored = float((a * b[:, ::-1]).sum())
            assert same > mirrored
    assert lat_r > 0
    reg = pd.read_csv(df.attrs["regions_path"], dtype={"image_id": str})
    assert list(reg.columns) == ["image_id", "rank", "score", "x0", "y0", "x1", "y1", "peak_x", "peak_y", "kind"]
    assert set(reg["image_id"]) <= set(df["image_id"])
    for iid, g in reg.groupby("image_id"):
        h, w = read_image(str(Path(manifest).parent / m.loc[iid, "path"])).pixels.shape
        assert 1 <= len(g) <= 2 and list(g["rank"]) == list(range(1, len(g) + 1))
        assert (g["score"].diff().dropna() <= 1e-9).all()
        assert ((g["x0"] >= 0) & (g["x0"] < g["x1"]) & (g["x1"] <= w)).all()
        assert ((g["y0"] >= 0) & (g["y0"] < g["y1"]) & (g["y1"] <= h)).all()
        assert ((g["peak_x"] >= g["x0"]) & (g["peak_x"] <= g["x1"])).all()


def test_top_region_is_the_planted_blob(toy_run, tmp_path):
    """Boxes are un-flipped / un-cropped: the best region holds the blob of a right breast."""
    import cv2

    sys_path = Path(__file__).resolve().parent
    import importlib.util

    spec = importlib.util.spec_from_file_location("tpa", sys_path / "test_predict_api.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p = load_predictor(toy_run[2])
    p.model = mod.BrightnessNet().eval()
    h, w = 150, 120
    yy, xx = np.mgrid[:h, :w]
    breast = (((w - 1 - xx) / 95.0) ** 2 + ((yy - 80) / 60.0) ** 2) <= 1
    img = np.where(breast, 0.35, 0.0)
    bx, by = 70, 100
    img = img + breast * 0.6 * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * 4.0**2))
    f = tmp_path / "right.png"
    cv2.imwrite(str(f), np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    df = predict(p, [f], tmp_path / "o.csv", heatmaps_dir=tmp_path / "hm", progress=False, top_k=3)
    reg = pd.read_csv(df.attrs["regions_path"])
    best = reg.iloc[0]
    assert best["rank"] == 1 and best["kind"] == "localization"
    assert best["x0"] - 2 <= bx <= best["x1"] + 2 and best["y0"] - 2 <= by <= best["y1"] + 2
    assert abs(best["peak_x"] - bx) <= 8 and abs(best["peak_y"] - by) <= 8


def test_cli_dicom_out(toy_run, cohort, tmp_path):
    import highdicom as hd

    _, _, run = toy_run
    png = tmp_path / "plain.png"
    import cv2

    cv2.imwrite(str(png), (np.random.default_rng(0).random((90, 70)) * 255).astype(np.uint8))
    out = tmp_path / "preds.csv"
    r = CliRunner().invoke(app, ["predict", str(run), str(cohort), str(png), "--out", str(out), "--dicom-out", str(tmp_path / "dcm"),
                                 "--operating-point", "0.0", "--json"])
    assert r.exit_code == 0, r.output
    summary, _end = json.JSONDecoder().raw_decode(r.output)  # the QC note follows the JSON
    assert summary["dicom"]["studies"] == 1 and summary["dicom"]["sr"] == 1
    assert summary["dicom"]["sc"] == 4 and summary["dicom"]["seg"] == 4
    df = pd.read_csv(out, dtype={"image_id": str})
    assert Path(summary["regions"]).is_file()
    # the heatmaps went beside the predictions (the DICOM folder holds DICOM only)
    assert all(Path(h).parent == tmp_path / "preds_heatmaps" for h in df["heatmap"])
    (study,) = [p for p in (tmp_path / "dcm").iterdir()]
    files = sorted(study.glob("*.dcm"))
    assert len(files) == 9
    kinds = {}
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == study.name
        kinds.setdefault(ds.Modality, []).append(ds)
    assert {k: len(v) for k, v in kinds.items()} == {"SR": 1, "OT": 4, "SEG": 4} or {k: len(v) for k, v in kinds.items()} == {"SR": 1, "SC": 4, "SEG": 4}
    sr = hd.sr.srread(next(f for f in files if pydicom.dcmread(f, stop_before_pixels=True).Modality == "SR"))
    groups = sr.content.get_planar_roi_measurement_groups()
    got = sorted(g.get_measurements()[0].value for g in groups)
    dcm_rows = df[df["path"].str.endswith(".dcm")]
    assert got == pytest.approx(sorted(dcm_rows["score"].round(6)), abs=1e-6)
    # operating point 0: every image's score passes it, so every image is a finding
    assert all(g.finding_type is not None for g in groups)
    # the PNG is scored but has no DICOM results: a QC flag says why (exit 0: not rejected)
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert (qc["severity"] == "flag").any() and qc["reason"].str.contains("not a DICOM file").any()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stow_failure_is_reported(toy_run, cohort, tmp_path):
    _, _, run = toy_run
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(app, ["predict", str(run), str(cohort), "--out", str(out), "--dicom-out", str(tmp_path / "d"), "--stow", url, "-q"])
    assert r.exit_code == 3, r.output
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert qc["reason"].str.contains("STOW-RS to http://127.0.0.1").any()
    # the objects are still written for a later retry
    assert len(list((tmp_path / "d").rglob("*.dcm"))) == 9
    r = CliRunner().invoke(app, ["predict", str(run), str(cohort), "--out", str(out), "--stow", url, "-q"])
    assert r.exit_code != 0 and "--dicom-out" in " ".join(r.output.split())
