"""DICOM conformance checked with real validators: ``dciodvfy`` (Debian ``dicom3tools``) on
the synthetic cohort's images and on every kind of output object, ``dsrdump`` (``dcmtk``)
on the SR. Skipped when the tools are missing, failed instead under
``MAMMOLENS_REQUIRE_SERVICES=1`` (CI installs them with ``scripts/system-deps.sh``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammolens.data.synthetic import synthesize_cohort
from mammolens.io.dicom_out import StudyImage, write_study_results


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not installed (apt-get install {package}; scripts/system-deps.sh)"
        if os.environ.get("MAMMOLENS_REQUIRE_SERVICES", "") not in ("", "0", "false"):
            pytest.fail(f"required for this run (MAMMOLENS_REQUIRE_SERVICES=1): {reason}")
        pytest.skip(reason)
    return path


def dciodvfy(path: Path) -> tuple[list[str], list[str], str]:
    """(errors, warnings, full output) of ``dciodvfy`` on one file."""
    exe = _tool("dciodvfy", "dicom3tools")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    text = res.stdout + res.stderr
    lines = text.splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    # the file-set (DICOMDIR) hints concern media, not the object
    warnings = [ln for ln in lines if ln.startswith("Warning") and "DICOMDIR" not in ln]
    return errors, warnings, text


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("cohort")
    synthesize_cohort(root, n_patients=1, seed=5)
    files = sorted((root / "dicom").rglob("*.dcm"))
    assert len(files) == 4
    return files


def test_synthetic_mammograms_are_conformant(study):
    for f in study:
        errors, _warnings, text = dciodvfy(f)
        assert "MammographyImageForPresentation" in text, text
        assert errors == [], f"{f.name}:\n{text}"
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert "Laterality" not in ds and ds.ImageLaterality in ("L", "R")


def _heat(ds, frac_y: float, frac_x: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
    y, x = frac_y * ds.Rows, frac_x * ds.Columns
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (0.02 * ds.Rows * ds.Columns)).astype(np.float32)


def test_outputs_are_conformant(study, tmp_path: Path):
    scores = [0.12, 0.35, 0.61, 0.9]
    images = []
    for f, s in zip(study, scores, strict=True):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        images.append(StudyImage(f, score=s, heatmap=_heat(ds, 0.4, 0.5)))
    out = write_study_results(images, tmp_path / "out", exam_score=0.9, model_name="attention_tiny", operating_point=0.5)
    assert len(out["sr"]) == 1 and len(out["sc"]) == 4 and len(out["seg"]) == 4
    expected = {"sr": "Comprehensive3DSR", "sc": "SCImage", "seg": "Segmentation"}
    for kind, paths in out.items():
        for p in paths:
            errors, warnings, text = dciodvfy(p)
            assert expected[kind] in text, text
            assert errors == [], f"{kind} {p.name}:\n{text}"
            # no undeclared (private) coding schemes: the report uses standard codes only
            assert not [w for w in warnings if "Coding Scheme" in w], text
    # overlays: one series each (series-level laterality = its image's), referencing the source
    sc = [pydicom.dcmread(p) for p in out["sc"]]
    assert len({d.SeriesInstanceUID for d in sc}) == 4
    srcs = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in study}
    for d in sc:
        ref = d.SourceImageSequence[0]
        src = pydicom.dcmread(srcs[str(ref.ReferencedSOPInstanceUID)], stop_before_pixels=True)
        assert d.Laterality == src.ImageLaterality
        assert list(d.PatientOrientation) == list(src.PatientOrientation)

    exe = _tool("dsrdump", "dcmtk")
    res = subprocess.run([exe, str(out["sr"][0])], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    dump = res.stdout
    assert dump.count('"Probability of cancer"') == 4 + 2 + 1  # images, breasts, exam
    assert '"CAD Operating Point")="0.5"' in dump
    # a finding only where the score passes the operating point: 2 images, the breast(s)
    # holding them, and the exam
    positive_breasts = {pydicom.dcmread(f, stop_before_pixels=True).ImageLaterality for f, s in zip(study, scores, strict=True) if s >= 0.5}
    assert dump.count('"Finding")=(52988006,SCT,"Lesion")') == 2 + len(positive_breasts) + 1
    assert "99MAMMOLENS" not in dump
