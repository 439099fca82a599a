"""read_dicom's value-table fast path gives exactly the per-pixel pipeline's numbers."""

import numpy as np
import pytest

from mammolens.data.synthetic import write_mammogram_dicom
from mammolens.io import dicom as dicom_mod

CASES = {
    "linear window": dict(bits_stored=12, window=(1800, 2400)),
    "two windows": dict(bits_stored=12, window=[(1800, 2400), (1000, 500)]),
    "sigmoid": dict(bits_stored=14, window=(6000, 9000), voi_function="SIGMOID"),
    "linear exact": dict(bits_stored=12, window=(2000, 1500.5), voi_function="LINEAR_EXACT"),
    "rescale negative slope": dict(bits_stored=12, rescale=(-1.0, 4095.0), window=(1500, 2000)),
    "monochrome1": dict(bits_stored=16, photometric="MONOCHROME1", window=(30000, 50000)),
    "voi lut": dict(bits_stored=12, voi_lut=np.linspace(0, 255, 4096).astype(np.uint16) ** 2 // 64),
    "no voi": dict(bits_stored=10),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("voi", ["auto", "none"])
def test_table_path_equals_per_pixel_path(tmp_path, monkeypatch, name, voi):
    opts = CASES[name]
    bits = opts["bits_stored"]
    rng = np.random.default_rng(7)
    img = rng.integers(3, 2**bits - 5, size=(96, 80)).astype(np.uint16)
    path = tmp_path / "x.dcm"
    write_mammogram_dicom(path, img, manufacturer="GE", laterality="L", view="CC", patient_id="p", study_uid="1.2.3.4", **opts)
    monkeypatch.setattr(dicom_mod, "_TABLE_MIN_PIXELS", 10**12)
    per_pixel = dicom_mod.read_dicom(path, voi=voi)
    monkeypatch.setattr(dicom_mod, "_TABLE_MIN_PIXELS", 0)
    table = dicom_mod.read_dicom(path, voi=voi)
    assert table.pixels.shape == (96, 80) and table.pixels.dtype == np.float32
    np.testing.assert_array_equal(table.pixels, per_pixel.pixels)
    assert table.meta["voi_applied"] == per_pixel.meta["voi_applied"]
    assert 0.0 <= table.pixels.min() and table.pixels.max() <= 1.0 and table.pixels.std() > 0
