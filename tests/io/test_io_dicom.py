"""The DICOM pixel pipeline, metadata parsing and rejection of bad files."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest

from mammolens.data.synthetic import write_mammogram_dicom
from mammolens.errors import InputError
from mammolens.io import (
    canonical_manufacturer,
    normalize_view,
    parse_age,
    read_dicom,
    read_dicom_metadata,
    read_image,
    validate_mammogram,
)

RAMP = (np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 2)  # 0..4094, 12-bit


def _write(tmp_path, name="a.dcm", pixels=RAMP, **kw):
    opts = dict(manufacturer="HOLOGIC, Inc.", laterality="L", view="CC", patient_id="P1",
                study_uid="1.2.826.0.1.3680043.10.1447.99", bits_stored=12, age=56)
    opts.update(kw)
    return write_mammogram_dicom(tmp_path / name, pixels, **opts)


# ---------------------------------------------------------------- pixel pipeline


def test_linear_window_formula(tmp_path):
    p = _write(tmp_path, window=(2048, 1024), voi_function="LINEAR")
    px = read_dicom(p).pixels
    x = RAMP.astype(float)
    expected = np.clip((x - 2047.5) / 1023 + 0.5, 0, 1)
    np.testing.assert_allclose(px, expected, atol=1e-6)
    assert px.dtype == np.float32 and px.min() == 0 and px.max() == 1


def test_linear_exact_and_sigmoid(tmp_path):
    pe = _write(tmp_path, "e.dcm", window=(2000, 1000), voi_function="LINEAR_EXACT")
    np.testing.assert_allclose(read_dicom(pe).pixels, np.clip((RAMP - 1500.0) / 1000, 0, 1), atol=1e-6)
    ps = _write(tmp_path, "s.dcm", window=(2000, 1000), voi_function="SIGMOID")
    img = read_dicom(ps)
    np.testing.assert_allclose(img.pixels, 1 / (1 + np.exp(-4 * (RAMP - 2000.0) / 1000)), atol=1e-6)
    assert "SIGMOID" in img.meta["voi_applied"]


def test_multiple_windows_choose_by_index(tmp_path):
    p = _write(tmp_path, window=[(1000, 500), (3000, 2000)])
    first = read_dicom(p).pixels
    second = read_dicom(p, voi=1).pixels
    np.testing.assert_allclose(first, np.clip((RAMP - 999.5) / 499 + 0.5, 0, 1), atol=1e-6)
    np.testing.assert_allclose(second, np.clip((RAMP - 2999.5) / 1999 + 0.5, 0, 1), atol=1e-6)
    with pytest.raises(InputError, match="window index 5"):
        read_dicom(p, voi=5)


def test_rescale_slope_intercept_applied_before_window(tmp_path):
    # modality values = 2 * stored - 100; window in modality units
    p = _write(tmp_path, rescale=(2.0, -100.0), window=(4000, 2001))
    mod = 2.0 * RAMP - 100
    np.testing.assert_allclose(read_dicom(p).pixels, np.clip((mod - 3999.5) / 2000 + 0.5, 0, 1), atol=1e-6)


def test_voi_lut_sequence(tmp_path):
    lut = (np.sqrt(np.arange(4096) / 4095.0) * 65535).astype(np.uint16)
    p = _write(tmp_path, voi_lut=lut, window=(100, 10))
    img = read_dicom(p)  # LUT preferred over the window
    np.testing.assert_allclose(img.pixels, lut[RAMP] / 65535.0, atol=1e-6)
    assert img.meta["voi_applied"] == "VOI LUT 0"
    win = read_dicom(p, prefer_lut=False)
    assert "window 0" in win.meta["voi_applied"]


@pytest.mark.parametrize("shape", [None, "INVERSE", "IDENTITY"])
def test_monochrome1_inverted_with_or_without_presentation_lut_shape(tmp_path, shape):
    p = _write(tmp_path, photometric="MONOCHROME1", presentation_lut_shape=shape, window=(2048, 4096))
    ds = pydicom.dcmread(p)
    assert ("PresentationLUTShape" in ds) == (shape is not None)
    px = read_dicom(p).pixels
    expected = 1 - np.clip((RAMP - 2047.5) / 4095 + 0.5, 0, 1)
    np.testing.assert_allclose(px, expected, atol=1e-6)
    assert px[0, 0] > px[-1, -1]  # low stored value = dense = bright


def test_monochrome2_inverse_shape_honoured(tmp_path):
    p = _write(tmp_path, presentation_lut_shape="INVERSE")
    px = read_dicom(p, voi="none").pixels
    np.testing.assert_allclose(px, 1 - RAMP / 4095.0, atol=1e-6)


@pytest.mark.parametrize("tiles", [1, 4])  # 4: above the size where the VOI runs as one table lookup
def test_bits_stored_high_bits_masked(tmp_path, tiles):
    ramp = np.tile(RAMP, (tiles, 1))
    p = _write(tmp_path, bits_stored=12, pixels=ramp)
    ds = pydicom.dcmread(p)
    dirty = ramp | np.uint16(0xF000)  # garbage (e.g. overlay bits) above bit 11
    ds.PixelData = dirty.astype("<u2").tobytes()
    ds.save_as(p)
    np.testing.assert_allclose(read_dicom(p, voi="none").pixels, ramp / 4095.0, atol=1e-6)
    np.testing.assert_allclose(read_dicom(p, voi="auto").pixels, read_dicom(_write(tmp_path, "clean.dcm", bits_stored=12, pixels=ramp), voi="auto").pixels)


def test_no_voi_in_file_auto_uses_min_max(tmp_path):
    p = _write(tmp_path)
    img = read_dicom(p)
    assert img.pixels.min() == 0 and img.pixels.max() == 1
    assert "min-max" in img.meta["voi_applied"]


@pytest.mark.parametrize("ts", ["explicit", "implicit", "rle", "jpeg2000", "jpegls", "jpeg_lossless", "jpeg_lossless_p14"])
@pytest.mark.parametrize("bits", [12, 16])
def test_transfer_syntax_round_trip(tmp_path, ts, bits):
    rng = np.random.default_rng(bits)
    a = rng.integers(0, 2**bits, size=(64, 48)).astype(np.uint16)
    p = _write(tmp_path, pixels=a, bits_stored=bits, transfer_syntax=ts)
    img = read_image(p, voi="none")
    np.testing.assert_allclose(img.pixels, a / (2**bits - 1), atol=1e-6)
    assert img.meta["transfer_syntax"] == pydicom.dcmread(p).file_meta.TransferSyntaxUID


# ---------------------------------------------------------------- metadata


def test_metadata_keys_and_values(tmp_path):
    p = _write(tmp_path, manufacturer="GE MEDICAL SYSTEMS", manufacturer_model="Senographe Pristina",
               laterality="R", view="MLO", window=(2000, 1000))
    m = read_dicom_metadata(p)
    for k in ("patient_id", "study_id", "sop_instance_uid", "series_instance_uid", "laterality", "view",
              "manufacturer", "manufacturer_raw", "manufacturer_model", "age", "modality",
              "presentation_intent", "photometric", "rows", "columns", "bits_stored", "transfer_syntax", "flags"):
        assert k in m
    assert (m["laterality"], m["view"], m["manufacturer"]) == ("R", "MLO", "GE")
    assert m["manufacturer_raw"] == "GE MEDICAL SYSTEMS" and m["manufacturer_model"] == "Senographe Pristina"
    assert (m["rows"], m["columns"], m["bits_stored"]) == (64, 32, 12)
    assert m["presentation_intent"] == "FOR PRESENTATION" and m["modality"] == "MG"
    assert m["flags"] == []


@pytest.mark.parametrize(
    "raw,expected",
    [("HOLOGIC, Inc.", "Hologic"), ("Lorad, A Hologic Company", "Hologic"), ("GE MEDICAL SYSTEMS", "GE"),
     ("GE Healthcare", "GE"), ("SIEMENS", "Siemens"), ("Siemens Healthineers", "Siemens"),
     ("Philips Medical Systems", "Philips"), ("Sectra Imtec AB", "Philips"), ("FUJIFILM Corporation", "Fujifilm"),
     ("Agfa-Gevaert", "Agfa"), ("KONICA MINOLTA", "Konica"), ("Planmed", "Planmed"), ("I.M.S. Giotto Spa", "IMS"),
     ("IMS s.r.l.", "IMS"), ("Carestream Health", "Carestream"), ("", ""), (None, ""), ("acme", "Acme"),
     ("GEMS", "GE")],
)
def test_canonical_manufacturer(raw, expected):
    assert canonical_manufacturer(raw) == expected


def test_parse_age_forms():
    assert parse_age("056Y") == 56
    assert parse_age("018M") == pytest.approx(1.5)
    assert parse_age("052W") == pytest.approx(52 * 7 / 365.25)
    assert parse_age("365D") == pytest.approx(365 / 365.25)
    assert parse_age("", "19600615", "20200614") == 59
    assert parse_age(None, "19600615", "20200615") == 60
    assert math.isnan(parse_age("", "", ""))
    assert math.isnan(parse_age("abc"))


def test_age_from_birth_date(tmp_path):
    p = _write(tmp_path, age=None, birth_date="19700301", study_date="20240229")
    assert read_dicom_metadata(p)["age"] == 53


def test_laterality_fallbacks(tmp_path):
    p = _write(tmp_path, extra={"ImageLaterality": None})
    assert read_dicom_metadata(p)["laterality"] == "L"  # series-level Laterality
    p2 = _write(tmp_path, "b.dcm", laterality="R", extra={"ImageLaterality": None, "Laterality": None},
                series_description="RCC screening")
    assert read_dicom_metadata(p2)["laterality"] == "R"
    p3 = _write(tmp_path, "c.dcm", extra={"ImageLaterality": None, "Laterality": None}, series_description="")
    m3 = read_dicom_metadata(p3)
    assert m3["laterality"] == "" and "unknown_laterality" in m3["flags"]


def test_view_from_code_sequence_and_normalisation(tmp_path):
    p = _write(tmp_path, view="MLO", extra={"ViewPosition": None}, series_description="")
    assert read_dicom_metadata(p)["view"] == "MLO"
    assert normalize_view("L CC") == "CC" and normalize_view("medio-lateral oblique") == "MLO"
    assert normalize_view("xccl") == "XCCL" and normalize_view("") == ""


def test_flags(tmp_path):
    p = _write(tmp_path, presentation_intent="FOR PROCESSING", implant=True, view="XCCL",
               view_modifiers=["spot", "magnification"])
    m = read_dicom_metadata(p)
    assert {"for_processing", "implant", "spot", "magnification", "non_standard_view"} <= set(m["flags"])
    assert m["sop_class_uid"].endswith(".1.2.1")
    assert validate_mammogram(m, p) == m["flags"]


# ---------------------------------------------------------------- bad inputs


def _assert_input_error(p, match):
    with pytest.raises(InputError) as ei:
        read_image(p)
    assert ei.value.path == str(p)
    assert ei.value.reason
    assert match in ei.value.reason, ei.value.reason


def test_truncated_file(tmp_path):
    p = _write(tmp_path, pixels=np.full((256, 128), 1000, np.uint16))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _assert_input_error(p, "truncated")


def test_truncated_header(tmp_path):
    p = _write(tmp_path)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InputError):
        read_image(p)


def test_non_dicom_file(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not an image at all\n" * 20)
    _assert_input_error(p, "unrecognised file format")


def test_ct_modality_rejected(tmp_path):
    p = _write(tmp_path, modality="CT", extra={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"})
    _assert_input_error(p, "not a mammogram")


def test_missing_pixel_data(tmp_path):
    p = _write(tmp_path, extra={"PixelData": None})
    _assert_input_error(p, "missing pixel data")


def test_unsupported_transfer_syntax(tmp_path):
    p = _write(tmp_path, transfer_syntax="rle")
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: no decoder
    ds.save_as(p)
    _assert_input_error(p, "unsupported transfer syntax")


def test_zero_dimensions(tmp_path):
    p = _write(tmp_path, extra={"Rows": 0})
    _assert_input_error(p, "zero image dimensions")


def test_colour_photometric_rejected(tmp_path):
    p = _write(tmp_path, extra={"PhotometricInterpretation": "RGB"})
    _assert_input_error(p, "photometric")


def test_metadata_of_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_dicom_metadata(tmp_path / "nope.dcm")
