"""check_pixel_header: what the header already disproves is rejected before decoding (and
at ingest): no Pixel Data, a length that contradicts Rows x Columns x Bits for
uncompressed syntaxes, absurd sizes. Decoder choice: no python-gdcm where another decoder
exists."""

from __future__ import annotations

import numpy as np
import pytest

from mammolens.errors import InputError
from mammolens.io.dicom import (
    check_pixel_header,
    decoding_plugin,
    read_dicom,
    read_dicom_metadata,
    validate_mammogram,
)

pydicom = pytest.importorskip("pydicom")


def _write(tmp_path, name="a.dcm", *, ts="explicit", h=64, w=48, **kw):
    from mammolens.data.synthetic import write_mammogram_dicom

    rng = np.random.default_rng(0)
    px = rng.integers(100, 4000, (h, w)).astype(np.uint16)
    return write_mammogram_dicom(tmp_path / name, px, manufacturer="HOLOGIC", laterality="L", view="CC",
                                 patient_id="P", study_uid="1.2.3", bits_stored=12, transfer_syntax=ts,
                                 window=(2048, 4096), **kw)


def _edit(path, **values):
    ds = pydicom.dcmread(path)
    for k, v in values.items():
        if v is None:
            del ds[k]
        else:
            setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


def _reason(path):
    """The reason from all three entry points, which must agree."""
    reasons = set()
    with pytest.raises(InputError) as e1:
        check_pixel_header(pydicom.dcmread(path), path)
    reasons.add(e1.value.reason)
    with pytest.raises(InputError) as e2:
        validate_mammogram(read_dicom_metadata(path), path)  # the ingest path: header only
    reasons.add(e2.value.reason)
    with pytest.raises(InputError) as e3:
        read_dicom(path)
    reasons.add(e3.value.reason)
    assert len(reasons) == 1, reasons
    assert e1.value.path == str(path)
    return reasons.pop()


def test_a_good_file_passes(tmp_path):
    for ts in ("explicit", "implicit", "jpeg2000", "rle"):
        p = _write(tmp_path, f"{ts}.dcm", ts=ts)
        check_pixel_header(pydicom.dcmread(p), p)
        check_pixel_header(pydicom.dcmread(p, stop_before_pixels=True), p)  # length read from the file
        assert read_dicom_metadata(p)["pixel_error"] == ""


def test_no_pixel_data(tmp_path):
    p = _edit(_write(tmp_path), PixelData=None)
    assert _reason(p) == "missing pixel data (no PixelData element)"


@pytest.mark.parametrize(("edit", "fragment"), [
    ({"Rows": 12000, "Columns": 12000}, "truncated or short pixel data"),
    ({"Rows": 65}, "header declares 65 x 48 at 16 bits"),
    ({"BitsAllocated": 32, "BitsStored": 12}, "(12,288 bytes)"),
    ({"Rows": 16, "Columns": 16}, "more than twice"),
])
def test_length_contradicting_the_dimensions(tmp_path, edit, fragment):
    p = _edit(_write(tmp_path), **edit)
    assert fragment in _reason(p)


def test_truncated_file_is_caught_from_the_header_alone(tmp_path):
    p = _write(tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 1000])
    meta = read_dicom_metadata(p)  # header-only read
    assert "truncated" in meta["pixel_error"]


@pytest.mark.parametrize(("edit", "fragment"), [
    ({"Rows": 20000}, "absurd declared image size 20000 x 48"),
    ({"Rows": 16000, "Columns": 16000}, "absurd declared image size: 256,000,000 samples"),
    ({"BitsAllocated": 12}, "invalid Bits Allocated 12"),
    ({"BitsStored": 17}, "Bits Stored 17 is outside"),
    ({"Columns": 0}, "zero image dimensions"),
])
def test_absurd_headers(tmp_path, edit, fragment):
    p = _edit(_write(tmp_path, ts="jpeg2000"), **edit)
    ds = pydicom.dcmread(p, stop_before_pixels=True)
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_pixel_header(ds, p)


def test_non_image_keeps_its_own_reason(tmp_path):
    p = _edit(_write(tmp_path), PixelData=None, Modality="SR", SOPClassUID="1.2.840.10008.5.1.4.1.1.88.22")
    with pytest.raises(InputError, match="not a mammogram"):
        validate_mammogram(read_dicom_metadata(p), p)


def test_decoder_choice_avoids_gdcm_where_another_exists():
    assert decoding_plugin("1.2.840.10008.1.2.4.90") == "pylibjpeg"  # JPEG 2000: openjpeg
    assert decoding_plugin("1.2.840.10008.1.2.4.80") == "pyjpegls"
    assert decoding_plugin("1.2.840.10008.1.2.4.50") == "pillow"
    assert decoding_plugin("1.2.840.10008.1.2.5") == "pylibjpeg"  # RLE: panics are caught
    assert decoding_plugin("1.2.840.10008.1.2.1") == ""
    assert decoding_plugin("1.2.3.4") == ""  # not a transfer syntax
    assert decoding_plugin("1.2.840.10008.1.2.4.70") == "gdcm"  # the only one: sandboxed


def test_jpeg_lossless_decodes_out_of_process_with_the_same_pixels(tmp_path):
    a = read_dicom(_write(tmp_path, "ex.dcm", ts="explicit"))
    b = read_dicom(_write(tmp_path, "jl.dcm", ts="jpeg_lossless"))
    np.testing.assert_array_equal(a.pixels, b.pixels)


def test_nan_window_and_rescale_are_rejected(tmp_path):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    for kw, raw in (("WindowWidth", b"NaN "), ("RescaleSlope", b"NaN ")):
        p = _write(tmp_path, f"{kw}.dcm")
        ds = pydicom.dcmread(p)
        ds._dict[Tag(kw)] = RawDataElement(Tag(kw), "DS", len(raw), raw, 0, False, True)
        ds.save_as(p, enforce_file_format=True)
        with pytest.raises(InputError, match="not finite|non-finite|NaN"):
            read_dicom(p)
