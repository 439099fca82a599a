"""Files that crash, panic or confuse the decoders (the shared crash corpus) never stop a
preprocessing run: each is a QC rejection with a reason, the good files are cached, -j1
and -j2 alike, nothing hangs, and a resumed run does not retry them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammolens.data.cache import open_cache
from mammolens.data.manifest import REQUIRED_COLUMNS
from mammolens.data.preprocess import PreprocessSettings, preprocess_manifest

S = PreprocessSettings(size=(64, 48), seg_size=128)

#: what each corpus signature must be rejected for (a fragment of the QC reason)
EXPECTED = {
    "N1_j2k_siz_precision_33": "JPEG 2000",
    "N1b_j2k_garbage": "JPEG 2000",
    "N2_jls_rows_plus_1": "JPEG-LS",
    "N3_jls_sof_precision_17": "JPEG-LS",
    "N4_jpeg_lossless_sof_precision_17": "decoder crashed (SIGSEGV)",
    "N5_jpeg_lossless_bitsallocated_32": "decoder crashed (SIGABRT)",
    "N6_jpeg_baseline_sof_precision_17": "JPEG Baseline",
    "P1_rle_columns_minus_1": "decoder panicked",
    "P2_rle_segment_overrun": "decoder panicked",
    "E1_window_center_abc": "invalid Modality LUT / VOI attributes (ValueError",
    "E2_voilut_32bit_entries": "NotImplementedError",
    "E3_voilut_no_lutdata": "KeyError",
    "E4_voilut_no_descriptor": "AttributeError",
    "E5_voilutfunction_bad_vr": "Unknown Value Representation",
    "E6_voilut_single_value": "IndexError",
    "S1_window_width_nan": "not finite",
    "C1_j2k_rows_plus_1": "does not hold Rows x Columns pixels",
}


def _good_dicoms(folder, n: int = 3) -> list:
    from mammolens.data.synthetic import write_mammogram_dicom

    paths = []
    h, w = 160, 128
    yy, xx = np.mgrid[:h, :w] + 0.5
    for i, ts in enumerate(["jpeg2000", "jpegls", "rle", "explicit", "jpeg_lossless"][:n]):
        img = np.full((h, w), 200, np.float64)
        r2 = (xx / (0.6 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2
        img[r2 <= 1] = 2500 + 800 * (1 - r2[r2 <= 1]) + 20 * i
        p = write_mammogram_dicom(folder / f"good_{ts}.dcm", img.astype(np.uint16), manufacturer="HOLOGIC, Inc.",
                                  laterality="L", view="CC", patient_id=f"G{i}", study_uid=f"1.2.3.{i}",
                                  bits_stored=12, transfer_syntax=ts, window=(2048, 4096))
        paths.append(p)
    return paths


def _manifest(paths) -> pd.DataFrame:
    df = pd.DataFrame({"image_id": [p.stem for p in paths], "patient_id": [p.stem for p in paths],
                       "path": [str(p) for p in paths], "laterality": "L"})
    for c in REQUIRED_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    return df


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2])
def test_crash_corpus_is_rejected_and_good_files_are_cached(crash_corpus, tmp_path, workers):
    good = _good_dicoms(tmp_path, n=5)
    corpus = sorted(crash_corpus.glob("*.dcm"))
    assert {p.stem for p in corpus} >= set(EXPECTED) | {"C0_good"}
    # good files before, between and after the crashers: the pool must survive every one
    paths = good[:2] + corpus[: len(corpus) // 2] + good[2:4] + corpus[len(corpus) // 2 :] + good[4:]
    cdir = tmp_path / "cache"
    res = preprocess_manifest(_manifest(paths), cdir, S, workers=workers, progress=False, timeout=240)
    rejected = {r.image_id: r.reason for r in res.qc.rejected}
    for name, fragment in EXPECTED.items():
        assert name in rejected, f"{name} was not rejected"
        assert fragment in rejected[name], (name, rejected[name])
    cached = set(open_cache(cdir).image_ids)
    assert cached == {p.stem for p in good} | {"C0_good"}
    assert res.total == len(paths) and res.rejected == len(EXPECTED)
    qc = pd.read_csv(cdir / "qc.csv", dtype=str, keep_default_na=False)
    assert set(qc.loc[qc["severity"] == "reject", "image_id"]) == set(EXPECTED)
    assert (qc.loc[qc["severity"] == "reject", "reason"] != "").all()
    assert (qc["stage"] == "preprocess").all()
    # resume: nothing is retried (a crasher would otherwise crash again on every run)
    again = preprocess_manifest(_manifest(paths), cdir, S, workers=workers, progress=False)
    assert (again.processed, again.skipped, again.rejected) == (0, len(paths), len(EXPECTED))


@pytest.mark.timeout(300)
def test_cli_preprocess_exit_3_on_the_crash_corpus(crash_corpus, tmp_path):
    import os

    from typer.testing import CliRunner

    from mammolens.cli import app

    paths = _good_dicoms(tmp_path, n=2) + [crash_corpus / "N4_jpeg_lossless_sof_precision_17.dcm",
                                           crash_corpus / "P2_rle_segment_overrun.dcm"]
    mpath = tmp_path / "manifest.csv"
    _manifest(paths).to_csv(mpath, index=False)
    r = CliRunner().invoke(app, ["preprocess", str(mpath), "--out", str(tmp_path / "c"), "-j", "1"],
                           env={**os.environ, "COLUMNS": "200"})
    assert r.exit_code == 3, r.output
    out = " ".join(r.output.split())
    assert "2 rejected" in out
    assert sorted(open_cache(tmp_path / "c").image_ids) == sorted(p.stem for p in paths[:2])
