"""The decoding sandbox: children that abort, segfault, panic, hang or raise become
InputErrors; pools survive dead workers and process every good item."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mammolens.errors import InputError
from mammolens.io.sandbox import IsolatedPool, crash_reason, read_image_isolated, run_isolated

HERE = Path(__file__).resolve().parent


@pytest.fixture()
def behave(monkeypatch):
    # children import the helper by name: its folder must be on sys.path (sent to each child)
    monkeypatch.syspath_prepend(str(HERE))
    import sandbox_helpers

    return sandbox_helpers.behave


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("abort", "decoder crashed (SIGABRT)"),
        ("segv", "decoder crashed (SIGSEGV)"),
        ("exit", "exited with status 7"),
        ("panic", "decoder panicked (PanicException: index out of bounds"),
        ("value", "unexpected error while decoding (ValueError: could not convert"),
    ],
)
def test_run_isolated_turns_every_death_into_an_input_error(behave, item, expected):
    out = run_isolated(behave, item, timeout=120)
    assert isinstance(out, InputError)
    assert expected in out.reason
    assert out.path == item  # the default path_of: the item itself


def test_run_isolated_passes_results_and_input_errors_through(behave):
    assert run_isolated(behave, "ok:1") == "done 1"
    err = run_isolated(behave, "input:x")
    assert isinstance(err, InputError)
    assert (err.path, err.reason) == ("/data/x.dcm", "missing pixel data")


def test_run_isolated_kills_a_hung_child(behave):
    out = run_isolated(behave, "hang", timeout=3)
    assert isinstance(out, InputError)
    assert "timed out after 3 s" in out.reason


@pytest.mark.parametrize("workers", [1, 2])
def test_pool_survives_dead_workers_and_processes_every_good_item(behave, workers):
    good = [f"ok:{i}" for i in range(12)]
    bad = ["abort", "segv", "panic", "value", "exit"]
    items = good[:3] + bad[:2] + good[3:8] + bad[2:] + good[8:]
    with IsolatedPool(workers, behave, timeout=120) as pool:
        results = list(pool.map_unordered(items))
        restarts = pool.restarts
    assert sorted(i for i, _ in results) == sorted(items)  # each exactly once
    by = dict(results)
    for g in good:
        assert by[g] == f"done {g[3:]}"
    assert "SIGABRT" in by["abort"].reason and "SIGSEGV" in by["segv"].reason
    assert "PanicException" in by["panic"].reason and "ValueError" in by["value"].reason
    assert "status 7" in by["exit"].reason
    assert all(isinstance(by[b], InputError) and by[b].path == b for b in bad)
    # one replacement per break; with 2 workers abort and segv may die in the same break
    assert restarts == 3 if workers == 1 else 2 <= restarts <= 3


def test_pool_times_out_a_hung_item_and_reruns_the_others(behave):
    items = ["ok:a", "hang", "slow:0.5", "ok:b", "ok:c"]
    with IsolatedPool(2, behave, timeout=10) as pool:
        by = dict(pool.map_unordered(items))
    assert isinstance(by["hang"], InputError) and "timed out after 10 s" in by["hang"].reason
    assert by["slow:0.5"] == "slept 0.5"
    assert [by[k] for k in ("ok:a", "ok:b", "ok:c")] == ["done a", "done b", "done c"]


def test_pool_consumer_stopping_early_does_not_hang(behave):
    with IsolatedPool(2, behave, timeout=60) as pool:
        for _item, _res in pool.map_unordered(["ok:1", "hang", "hang", "ok:2"]):
            break
    assert pool._executor is None


def test_pool_validates_arguments(behave):
    with pytest.raises(ValueError, match="workers"):
        IsolatedPool(0, behave)
    with pytest.raises(ValueError, match="timeout"):
        IsolatedPool(1, behave, timeout=0)


def test_crash_reason_names_the_signal_and_the_syntax(tmp_path):
    assert crash_reason(-6, None) == "decoder crashed (SIGABRT) while decoding the image"
    assert "exited with status 3" in crash_reason(3, tmp_path / "missing.dcm")


def test_read_image_isolated_returns_what_read_image_returns(tmp_path):
    from mammolens.io.images import read_image

    p = tmp_path / "img.pgm"
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 4095, (40, 30)).astype(">u2")
    p.write_bytes(b"P5\n30 40\n4095\n" + arr.tobytes())
    iso = read_image_isolated(p)
    ref = read_image(p)
    np.testing.assert_array_equal(iso.pixels, ref.pixels)
    assert iso.meta == ref.meta
    with pytest.raises(InputError, match="empty file"):
        (tmp_path / "empty.dcm").write_bytes(b"")
        read_image_isolated(tmp_path / "empty.dcm")


@pytest.mark.skipif(sys.platform != "linux", reason="signals as on Linux")
def test_read_image_isolated_on_a_file_that_kills_gdcm(tmp_path):
    """A JPEG 2000 stream that makes python-gdcm abort: an InputError, not a dead process."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    p = _garbage_j2k(tmp_path, pydicom, encapsulate, JPEG2000Lossless)
    with pytest.raises(InputError) as exc:
        read_image_isolated(p)
    assert exc.value.path == str(p)
    assert "JPEG 2000" in exc.value.reason


def _garbage_j2k(tmp_path, pydicom, encapsulate, syntax):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "MG", "P1"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 64, 64, 16, 12, 11, 0
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51garbage" * 10])
    ds["PixelData"].VR = "OB"
    p = tmp_path / "garbage_j2k.dcm"
    ds.save_as(p, enforce_file_format=True)
    return p


def test_pool_start_runs_the_workers_before_the_first_item(behave):
    """``start()`` launches the workers (and their initializer) without waiting; the pool
    then maps as usual, and a dead worker is still replaced."""
    import time

    with IsolatedPool(2, behave, timeout=120) as pool:
        assert pool.start() is pool
        procs = dict(getattr(pool._executor, "_processes", None) or {})
        deadline = time.monotonic() + 120
        while len(procs) < 2 and time.monotonic() < deadline:  # spawned by the manager thread
            time.sleep(0.05)
            procs = dict(getattr(pool._executor, "_processes", None) or {})
        assert len(procs) == 2
        by = dict(pool.map_unordered(["ok:1", "segv", "ok:2"]))
    assert by["ok:1"] == "done 1" and by["ok:2"] == "done 2"
    assert "SIGSEGV" in by["segv"].reason
    assert pool._executor is None
