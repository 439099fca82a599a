"""write_mammogram_dicom: a valid MG file, its tags, and argument checks."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mammolens.data.synthetic import MG_FOR_PROCESSING, deterministic_uid, write_mammogram_dicom

A = (np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) % 4096)


def _w(tmp_path, **kw):
    opts = dict(manufacturer="SIEMENS", laterality="R", view="MLO", patient_id="P9", study_uid="1.2.3.4")
    opts.update(kw)
    return write_mammogram_dicom(tmp_path / "x.dcm", A, **opts)


def test_valid_mg_file(tmp_path):
    p = _w(tmp_path, age=61, window=[(2000, 3000), (2000, 2000)], voi_function="LINEAR",
           window_explanations=["NORMAL", "HARDER"], pixel_spacing=0.085)
    ds = pydicom.dcmread(p)
    assert ds.preamble is not None and ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
    assert ds.PatientAge == "061Y" and ds.ImageLaterality == "R" and ds.ViewPosition == "MLO"
    assert ds.ViewCodeSequence[0].CodeValue == "399368009"
    assert list(ds.PatientOrientation) == ["P", "F"]
    assert ds.BitsStored == 12 and ds.HighBit == 11 and ds.BitsAllocated == 16
    assert [float(c) for c in ds.WindowCenter] == [2000, 2000] and list(ds.WindowCenterWidthExplanation) == ["NORMAL", "HARDER"]
    assert ds.PresentationLUTShape == "IDENTITY"
    np.testing.assert_array_equal(ds.pixel_array, A)


def test_for_processing_and_monochrome1(tmp_path):
    ds = pydicom.dcmread(_w(tmp_path, presentation_intent="FOR PROCESSING", photometric="MONOCHROME1"))
    assert ds.SOPClassUID == MG_FOR_PROCESSING and ds.PresentationLUTShape == "INVERSE"


def test_uids_deterministic(tmp_path):
    a = pydicom.dcmread(_w(tmp_path)).SOPInstanceUID
    b = pydicom.dcmread(_w(tmp_path)).SOPInstanceUID
    assert a == b and a.startswith("2.25.") and len(a) <= 64
    assert deterministic_uid("x", 1) != deterministic_uid("x", 2)


@pytest.mark.parametrize(
    "pixels,kw,match",
    [
        (np.zeros((4, 4, 3), np.uint16), {}, "2-D"),
        (np.zeros((4, 4), np.float32), {}, "integers"),
        (np.full((4, 4), 5000, np.uint16), {"bits_stored": 12}, "does not fit"),
        (np.zeros((4, 4), np.uint16), {"photometric": "RGB"}, "photometric"),
        (np.zeros((4, 4), np.uint16), {"transfer_syntax": "jpeg-xl-please"}, "transfer syntax"),
        (np.zeros((4, 4), np.uint16), {"presentation_intent": "FOR FUN"}, "presentation_intent"),
    ],
)
def test_bad_arguments(tmp_path, pixels, kw, match):
    opts = dict(manufacturer="GE", laterality="L", view="CC", patient_id="p", study_uid="1.2")
    opts.update(kw)
    with pytest.raises(ValueError, match=match):
        write_mammogram_dicom(tmp_path / "bad.dcm", pixels, **opts)
