"""Fuzzing in the default suite: seeded mutations of MG DICOMs of every supported transfer
syntax, each through header ingest, read_dicom and preprocessing in a child process. Every
case must end as a clean InputError or a valid finite image: no signal, no hang, no other
exception, no NaN. (bench/fuzz_pipeline.py runs 10,000+ cases; figures in bench/results.)"""

from __future__ import annotations

import pytest

from mammolens.io.dicom import read_dicom
from mammolens.testing.fuzz import SEED_SPECS, case_bytes, run_fuzz, write_seeds

SYNTAXES = {
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5",  # RLE
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1 (python-gdcm, out of process)
    "1.2.840.10008.1.2.4.50",  # JPEG baseline 8-bit
}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return write_seeds(tmp_path_factory.mktemp("fuzz-seeds"))


def test_seeds_cover_every_supported_syntax_and_decode(seeds):
    assert len(seeds) == len(SEED_SPECS)
    found = set()
    for p in seeds:
        img = read_dicom(p)
        assert img.pixels.shape == (96, 80) and 0.0 <= img.pixels.min() < img.pixels.max() <= 1.0
        found.add(img.meta["transfer_syntax"])
    assert found == SYNTAXES


def test_mutations_are_deterministic(seeds):
    a = case_bytes(str(seeds[0]), 17, 5)
    assert a == case_bytes(str(seeds[0]), 17, 5)
    assert a != case_bytes(str(seeds[0]), 18, 5)


@pytest.mark.timeout(600)
def test_fuzzed_files_end_as_input_errors_or_valid_images(seeds):
    report = run_fuzz(seeds, n_cases=200, seed=20261129, workers=2, timeout=240)
    o = report["outcomes"]
    assert report["failures"] == [], report["failures"][:5]
    assert o["crash"] == o["hang"] == o["stray_exception"] == o["invalid_image"] == 0
    assert o["ok"] + o["rejected"] == 200
    # the mutations bite (rejections) without being all-destroying (valid images remain)
    assert o["rejected"] >= 50 and o["ok"] >= 30
    assert set(report["by_seed"]) == {stem for stem, *_ in SEED_SPECS}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_2000_cases(seeds):
    report = run_fuzz(seeds, n_cases=2000, seed=7, workers=2, timeout=300)
    assert report["failures"] == [], report["failures"][:5]
