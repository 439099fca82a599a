"""`mammolens predict --dicom-out DIR --stow URL` against a real PACS (Orthanc + DICOMweb):
the objects the service would store arrive on the study."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.orthanc


def test_predict_stow_to_orthanc(orthanc_url: str, tiny_run: Path, tmp_path: Path):
    from dicomweb_client.api import DICOMwebClient

    from mammolens.cli import app
    from mammolens.data.synthetic import synthesize_cohort

    synthesize_cohort(tmp_path / "c", n_patients=1, seed=21)
    files = sorted((tmp_path / "c" / "dicom").rglob("*.dcm"))
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    r = CliRunner().invoke(app, ["predict", str(tiny_run), str(tmp_path / "c" / "dicom"), "--out", str(tmp_path / "p.csv"),
                                 "--dicom-out", str(tmp_path / "dcm"), "--stow", orthanc_url, "--json"])
    assert r.exit_code == 0, r.output
    summary, _ = json.JSONDecoder().raw_decode(r.output)
    assert summary["dicom"]["stored"] == 9 and summary["dicom"]["stow"] == orthanc_url
    pacs = DICOMwebClient(url=orthanc_url)
    series = pacs.search_for_series(uid)
    mods = sorted(s["00080060"]["Value"][0] for s in series)
    assert mods.count("SR") == 1 and mods.count("SEG") == 1 and mods.count("OT") == 4
    written = {p.stem for p in (tmp_path / "dcm" / uid).glob("*.dcm")}
    stored = {i["00080018"]["Value"][0] for s in series if s["00080060"]["Value"][0] != "MG"
              for i in pacs.search_for_instances(uid, s["0020000E"]["Value"][0])}
    assert written == stored
