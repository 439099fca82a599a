"""DICOM outputs: SR (TID 1500), heatmap secondary capture and segmentation, read back."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from serve_fixtures import write_study  # noqa: E402

from mammolens.io.dicom_out import (  # noqa: E402
    NOT_CLINICAL,
    ImageFinding,
    StudyImage,
    make_heatmap_secondary_capture,
    make_sr,
    write_study_results,
)


def _heat(ds, y, x):
    yy, xx = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 50.0).astype(np.float32)


def test_write_study_results_roundtrip(tmp_path: Path):
    import highdicom as hd

    _uid, paths = write_study(tmp_path / "src", rows=80, cols=60)
    dss = [pydicom.dcmread(p) for p in paths]
    images = [
        StudyImage(p, score=0.1 * (i + 1), breast_score=0.5, heatmap=_heat(ds, 20 + i, 30))
        for i, (p, ds) in enumerate(zip(paths, dss, strict=True))
    ]
    out = write_study_results(images, tmp_path / "out", exam_score=0.4, model_name="attention_tiny", operating_point=0.3)
    assert len(out["sr"]) == 1 and len(out["sc"]) == 4 and len(out["seg"]) == 4

    sr = hd.sr.srread(out["sr"][0])
    assert sr.StudyInstanceUID == dss[0].StudyInstanceUID and sr.PatientID == dss[0].PatientID
    assert NOT_CLINICAL in sr.SeriesDescription
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 4
    g0 = groups[0]
    region = g0.roi
    assert region.graphic_type.value == "POINT"
    np.testing.assert_allclose(region.value, [[30.5, 20.5]])
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dss[0].SOPInstanceUID
    (m,) = g0.get_measurements()
    assert m.value == pytest.approx(0.1)
    exam = [g for g in sr.content.get_image_measurement_groups() if g.tracking_identifier == "AI exam"]
    assert exam and exam[0].get_measurements()[0].value == pytest.approx(0.4)
    assert exam[0].get_qualitative_evaluations()[0].value.meaning.startswith("Presentation Required")
    # honest coding: every image has a score, a finding only at or above the operating point
    found = [g.finding_type.meaning if g.finding_type is not None else None for g in groups]
    assert found == [None, None, "Lesion", "Lesion"]
    assert [g.get_measurements()[0].value for g in groups] == pytest.approx([0.1, 0.2, 0.3, 0.4])

    sc = pydicom.dcmread(out["sc"][0])
    assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.shape == (80, 60, 3)
    assert sc.StudyInstanceUID == dss[0].StudyInstanceUID and NOT_CLINICAL in sc.SeriesDescription
    px = sc.pixel_array.astype(int)
    # colour where the heatmap peaks, grey far from it
    assert abs(px[20, 30, 0] - px[20, 30, 2]) > 30
    assert abs(px[75, 5, 0] - px[75, 5, 2]) < 5

    seg = hd.seg.segread(out["seg"][0])
    assert seg.SegmentationType == "FRACTIONAL" and NOT_CLINICAL in seg.SeriesDescription
    arr = seg.pixel_array  # stored fractions, 0..MaximumFractionalValue
    arr = np.asarray(arr, dtype=float).squeeze()
    assert np.unravel_index(int(np.argmax(arr)), arr.shape) == (20, 30)
    assert seg.SourceImageSequence[0].ReferencedSOPInstanceUID == dss[0].SOPInstanceUID


def test_refusals(tmp_path: Path):
    _uid, paths = write_study(tmp_path / "src", rows=40, cols=30)
    ds = pydicom.dcmread(paths[0])
    with pytest.raises(ValueError, match="shape"):
        make_heatmap_secondary_capture(ds, np.zeros((10, 10)))
    with pytest.raises(ValueError, match="probability"):
        make_sr([ds], [ImageFinding(ds.SOPInstanceUID, 1.5)], exam_score=0.2, model_name="m")
    with pytest.raises(ValueError, match="not among"):
        make_sr([ds], [ImageFinding("1.2.3", 0.5)], exam_score=0.2, model_name="m")
    with pytest.raises(ValueError, match="outside"):
        make_sr([ds], [ImageFinding(ds.SOPInstanceUID, 0.5, peak=(500.0, 1.0))], exam_score=0.2, model_name="m")
    _uid2, other = write_study(tmp_path / "src2", rows=40, cols=30)
    with pytest.raises(ValueError, match="studies"):
        write_study_results([StudyImage(paths[0], 0.1), StudyImage(other[0], 0.1)], tmp_path / "o", exam_score=0.1, model_name="m")
