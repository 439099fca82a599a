"""The synthetic cohort: determinism, ground truth on the right pixels, manifest, vendors, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from mammolens.data.lesions import MASK_MALIGNANT, parse_lesions, rasterize_lesions
from mammolens.data.manifest import read_manifest
from mammolens.data.synthetic import VENDORS, synthesize_cohort
from mammolens.io import read_dicom_metadata, read_image


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".synth" not in p.parts
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    res = synthesize_cohort(out, n_patients=3, seed=11, prevalence=1.0, benign_rate=1.0)
    return out, res


def test_layout_and_counts(cohort):
    out, res = cohort
    assert res.n_patients == 3 and res.n_images == 12
    assert (out / "README.txt").read_text().startswith("mammolens synthetic")
    dcms = sorted((out / "dicom").rglob("*.dcm"))
    assert len(dcms) == 12
    for p in dcms:  # dicom/<patient>/<study>/<sop>.dcm
        m = read_dicom_metadata(p)
        rel = p.relative_to(out / "dicom").parts
        assert rel == (m["patient_id"], m["study_id"], m["sop_instance_uid"] + ".dcm")
        assert m["modality"] == "MG" and m["presentation_intent"] == "FOR PRESENTATION"
        assert m["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.1.2" and m["flags"] == []
    ann = pd.read_csv(out / "annotations.csv", dtype=str, keep_default_na=False)
    assert list(ann.columns[:6]) == ["sop_instance_uid", "path", "label", "outcome", "density", "lesions"]


def test_manifest_valid_and_consistent(cohort):
    out, _ = cohort
    df = read_manifest(out / "manifest.csv")
    raw = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert all(not Path(p).is_absolute() for p in raw["path"])  # portable
    assert all(Path(p).exists() for p in df["path"])
    assert df["image_id"].is_unique and len(df) == 12
    ann = pd.read_csv(out / "annotations.csv", dtype=str, keep_default_na=False).set_index("sop_instance_uid")
    for r in df.itertuples():
        assert str(r.label) == ann.loc[r.sop_instance_uid, "label"]
        assert r.density in "ABCD" and 40 <= r.age <= 75
    for _, exam in df.groupby("study_id"):
        assert sorted(zip(exam.laterality, exam.view, strict=True)) == [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
        # prevalence 1.0: one breast malignant in both views, the other not
        per_breast = exam.groupby("laterality")["label"].agg(list)
        assert sorted(tuple(v) for v in per_breast) == [(0, 0), (1, 1)]
    assert set(df["outcome"]) <= {"malignant", "benign", "normal"}
    assert (df["label"] == 1).sum() == 6


def test_lesions_land_on_bright_pixels(cohort):
    out, _ = cohort
    df = read_manifest(out / "manifest.csv")
    checked = 0
    for r in df.itertuples():
        if not r.lesions:
            continue
        img = read_image(r.path).pixels
        for le in parse_lesions(r.lesions):
            m = rasterize_lesions([le], img.shape, base_dir=out) > 0
            assert m.any(), le
            ring = cv2.dilate(m.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool) & ~m
            if le.shape in ("mask", "circle"):  # masses: brighter than their surroundings
                assert img[m].mean() > img[ring].mean() + 0.02, (r.image_id, le.to_dict())
            elif le.shape == "polygon":  # calcifications: the brightest specks are inside
                assert img[m].max() > np.quantile(img[ring], 0.99), (r.image_id, le.to_dict())
            else:  # point: a coarse calcification right there
                x, y = int(le.geometry["x"]), int(le.geometry["y"])
                patch = img[max(0, y - 2): y + 3, max(0, x - 2): x + 3]
                assert patch.max() > np.median(img[ring]), (r.image_id, le.to_dict())
            checked += 1
    assert checked >= 6


def test_malignant_masks_are_pngs_of_image_size(cohort):
    out, _ = cohort
    df = read_manifest(out / "manifest.csv")
    for r in df.itertuples():
        for le in parse_lesions(r.lesions):
            if le.shape == "mask":
                assert not Path(le.geometry["path"]).is_absolute()
                m = cv2.imread(str(out / le.geometry["path"]), cv2.IMREAD_UNCHANGED)
                assert m.shape == (r.height, r.width) and m.max() == 255
                assert rasterize_lesions([le], m.shape, base_dir=out).max() == MASK_MALIGNANT


def test_deterministic_and_resumable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize_cohort(a, n_patients=2, seed=5, vendors=["GE"])
    synthesize_cohort(b, n_patients=2, seed=5, vendors=["GE"], workers=2)
    da, db = _digest(a), _digest(b)
    assert da == db and len(da) >= 10
    again = synthesize_cohort(a, n_patients=2, seed=5, vendors=["GE"])
    assert again.resumed == 2 and _digest(a) == da
    c = synthesize_cohort(tmp_path / "c", n_patients=1, seed=6, vendors=["GE"])
    assert _digest(c.out_dir) != da


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_vendor_characteristics(tmp_path, vendor):
    res = synthesize_cohort(tmp_path, n_patients=1, seed=2, vendors=[vendor])
    v = VENDORS[vendor]
    for p in sorted((tmp_path / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        assert ds.BitsStored == v.bits_stored and ds.PhotometricInterpretation == v.photometric
        assert ds.VOILUTFunction == v.voi_function and len(ds.WindowCenter) >= 2
        assert 500 <= ds.Rows <= 700 and abs(ds.Rows / ds.Columns - v.rows / v.columns) < 0.01
        assert read_dicom_metadata(p)["manufacturer"] == vendor
        img = read_image(p)
        # dense tissue bright after the pipeline, background dark, whatever the photometric
        breast = img.pixels > 0.3
        assert 0.1 < breast.mean() < 0.9
        assert np.median(img.pixels[~breast]) < 0.2
    assert res.vendors == {vendor: 1}


def test_cli_synth(tmp_path):
    from mammolens.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["synth", str(tmp_path / "o"), "--patients", "1", "--seed", "3", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["n_images"] == 4 and Path(summary["manifest_path"]).exists()
    bad = runner.invoke(app, ["synth", str(tmp_path / "p"), "--size", "huge"])
    assert bad.exit_code == 2
    assert runner.invoke(app, ["synth", "--help"]).exit_code == 0


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        synthesize_cohort(tmp_path, n_patients=0, seed=1)
    with pytest.raises(ValueError):
        synthesize_cohort(tmp_path, n_patients=1, seed=1, vendors=["Acme"])


@pytest.mark.slow
def test_full_size_matrices(tmp_path):
    synthesize_cohort(tmp_path, n_patients=1, seed=4, size="full", vendors=["GE"])
    p = next((tmp_path / "dicom").rglob("*.dcm"))
    ds = pydicom.dcmread(p, stop_before_pixels=True)
    assert (ds.Rows, ds.Columns) == (VENDORS["GE"].rows, VENDORS["GE"].columns)
