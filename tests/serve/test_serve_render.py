"""The viewer shows what the model saw (issue 13): images are rendered through the one
pixel pipeline (`mammolens.io.read_image`), so a GE SIGMOID window, a VOI LUT and
MONOCHROME1 look the same in the viewer as in the model's input, up to the display
window the user sets."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from serve_fixtures import upload, write_mg

from mammolens.io import read_image
from mammolens.serve.render import load_display, render_png

STUDY = "1.2.826.0.1.3680043.8.498.77"


def _sigmoid(path: Path) -> Path:
    write_mg(path, study_uid=STUDY, laterality="R", view="CC", seed=1)
    ds = pydicom.dcmread(path)
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.VOILUTFunction = "SIGMOID"
    ds.WindowCenter, ds.WindowWidth = 2400, 900
    ds.save_as(path, enforce_file_format=True)
    return path


def _voi_lut(path: Path) -> Path:
    from pydicom.dataset import Dataset

    write_mg(path, study_uid=STUDY, laterality="L", view="CC", seed=2)
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    x = np.arange(4096) / 4095.0
    # a strongly non-linear curve (LUT Data is OW: little-endian 16-bit words)
    item.LUTData = np.round(65535 * x**0.4).astype("<u2").tobytes()
    item.LUTExplanation = "test curve"
    ds.VOILUTSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    return path


def _monochrome1(path: Path) -> Path:
    write_mg(path, study_uid=STUDY, laterality="R", view="MLO", seed=3)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = (4095 - ds.pixel_array).astype(np.uint16).tobytes()  # dense tissue dark as stored
    ds.save_as(path, enforce_file_format=True)
    return path


VARIANTS = {"sigmoid": _sigmoid, "voi_lut": _voi_lut, "monochrome1": _monochrome1}


def _model_input(path: Path) -> np.ndarray:
    """What the model is fed, as 8 bits: the reader's pixels (preprocessing only crops
    and resizes them)."""
    return (read_image(path).pixels * 255.0 + 0.5).astype(np.uint8)


def _naive(path: Path) -> np.ndarray:
    """The former viewer: a linear window over the raw values, MONOCHROME1 inverted."""
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float64)
    if "WindowWidth" in ds:
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    else:
        c, w = (raw.min() + raw.max()) / 2, raw.max() - raw.min()
    y = np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 1 - y
    return (y * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_viewer_pixels_are_the_model_input(variant: str, tmp_path: Path):
    p = VARIANTS[variant](tmp_path / f"{variant}.dcm")
    expected = _model_input(p)
    d = load_display(p, "", decode=lambda path, window: read_image(path, voi=window))
    shown = np.asarray(Image.open(io.BytesIO(render_png(d, hanging=False))))
    assert shown.shape == expected.shape
    assert np.array_equal(shown, expected)
    if variant != "monochrome1":  # what the old viewer showed was not what the model saw
        assert np.abs(_naive(p).astype(int) - expected.astype(int)).max() > 20
    # dense tissue is bright for the radiologist as for the model (MONOCHROME1 inverted)
    blob = shown[40:56, 20:40].mean()
    assert blob > shown[:, :4].mean() if variant != "monochrome1" else blob > 100
    # the user's window applies over those intensities (display units, 0-1)
    narrowed = np.asarray(Image.open(io.BytesIO(render_png(d, center=0.5, width=0.5, hanging=False))))
    want = (np.clip((read_image(p).pixels - 0.25) / 0.5, 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.abs(narrowed.astype(int) - want.astype(int)).max() <= 1


def test_the_viewer_api_serves_the_model_input(service_app, tmp_path: Path):
    """Through the service: decoded in a child process, the same pixels."""
    _app, api, _ = service_app
    c = api.client
    admin = api.login("admin")
    paths = [make(tmp_path / f"{name}.dcm") for name, make in sorted(VARIANTS.items())]
    r = upload(c, admin, paths)
    assert r.status_code == 202 and r.json()["stored"] == 3, r.text
    sid = r.json()["study_ids"][0]
    end = time.monotonic() + 240
    while (st := c.get(f"/api/studies/{sid}", headers=admin).json())["status"] not in ("scored", "failed"):
        assert time.monotonic() < end
        time.sleep(0.2)
    by_key = {(im["laterality"], im["view"]): im["id"] for im in st["images"]}
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        im = by_key[(ds.ImageLaterality, ds.ViewPosition)]
        info = c.get(f"/api/images/{im}/info", headers=admin).json()
        assert (info["window_center"], info["window_width"]) == (0.5, 1.0) and info["voi"]
        r = c.get(f"/api/images/{im}/image.png?hanging=false", headers=admin)
        assert r.status_code == 200
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), _model_input(p)), p.name
