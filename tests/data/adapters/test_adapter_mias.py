"""mini-MIAS adapter: fixtures in the real Info.txt/PGM format and the real folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammolens.data.adapters import get_adapter
from mammolens.data.adapters.mias import DENSITY_MAP, read_pgm_size
from mammolens.data.ingest import breast_labels, exam_labels, ingest
from mammolens.data.manifest import read_manifest
from mammolens.errors import InputError
from mammolens.qc import QCTable

HEADER = """              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
                  MiniMammographic Database

1st column: MIAS database reference number.
5th,6th columns: x,y image-coordinates of centre of abnormality.
=================================================================

"""


def make_mias(root: Path, lines: list[str], sizes: dict[str, tuple[int, int]], pgm_writer) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Info.txt").write_text(HEADER + "\n".join(lines) + "\n\n=================\n")
    for ref, (h, w) in sizes.items():
        pgm_writer(root / f"{ref}.pgm", h, w)
    return root


@pytest.fixture
def mias_fixture(tmp_path, pgm_writer):
    lines = [
        "mdb001 G CIRC B 30 10 5",  # benign, y from bottom
        "mdb002 G NORM ",
        "mdb003 D SPIC M 20 50 8",
        "mdb003 D CALC B 5 5 2",  # second abnormality on the same image
        "mdb004 D NORM",
        "mdb005 F CALC M",  # widely distributed calcifications: no location
        "mdb006 F NORM",
    ]
    # non-square and not 1024: the y flip must use the height from the PGM header
    sizes = {f"mdb00{i}": (64, 48) for i in range(1, 7)}
    return make_mias(tmp_path / "mias", lines, sizes, pgm_writer)


def test_mias_rows_labels_and_y_flip(mias_fixture, tmp_path):
    res = ingest("mias", mias_fixture, tmp_path / "out" / "m.csv")
    df = res.manifest.set_index("image_id")
    assert len(df) == 6 and not res.qc.rejected
    # pairs: odd right, even left, one patient per pair
    assert df.loc["mdb001", "laterality"] == "R" and df.loc["mdb002", "laterality"] == "L"
    assert df.loc["mdb001", "patient_id"] == df.loc["mdb002", "patient_id"] == "mdb001-002"
    assert df.loc["mdb003", "patient_id"] == "mdb003-004"
    assert set(df["view"]) == {"MLO"}
    assert df.loc["mdb001", "label"] == 0 and df.loc["mdb001", "outcome"] == "benign"
    assert df.loc["mdb002", "outcome"] == "normal"
    assert df.loc["mdb003", "label"] == 1 and df.loc["mdb003", "outcome"] == "malignant"
    les = json.loads(df.loc["mdb001", "lesions"])
    assert les == [{"shape": "circle", "cx": 30, "cy": 64 - 10, "r": 5, "pathology": "benign", "kind": "mass", "source": "CIRC"}]
    les3 = json.loads(df.loc["mdb003", "lesions"])
    assert [(le["cx"], le["cy"], le["pathology"], le["kind"]) for le in les3] == [
        (20, 14, "malignant", "mass"),
        (5, 59, "benign", "calcification"),
    ]
    assert int(df.loc["mdb003", "height"]) == 64 and int(df.loc["mdb003", "width"]) == 48
    # density mapping and original kept
    assert df.loc["mdb001", "density"] == "B" and df.loc["mdb001", "density_original"] == "G"
    assert df.loc["mdb003", "density"] == DENSITY_MAP["D"] == "C"
    assert df.loc["mdb005", "density"] == "A"
    # no location: pathology kept, no geometry, flagged
    assert df.loc["mdb005", "label"] == 1 and df.loc["mdb005", "lesions"] == ""
    assert "no_location" in df.loc["mdb005", "flags"]
    assert any(r.image_id == "mdb005" and r.severity == "flag" for r in res.qc)
    assert set(df["dataset"]) == {"mini-mias"}
    assert df["age"].isna().all() and (df["manufacturer"] == "").all()
    # the written manifest reads back identically
    back = read_manifest(res.manifest_path)
    assert list(back["image_id"]) == list(res.manifest["image_id"])
    assert res.qc_path == tmp_path / "out" / "m_qc.csv" and res.qc_path.exists()


def test_mias_lesion_centre_round_trips_to_pixel(tmp_path, pgm_writer):
    """A bright spot at row r (top origin) is found where the converted circle says."""
    import numpy as np

    from mammolens.data.lesions import parse_lesions, rasterize_lesions

    root = tmp_path / "m"
    root.mkdir()
    h, w = 80, 60
    img = np.zeros((h, w), np.uint8)
    img[20, 40] = 255  # row 20 from the top = y 60 from the bottom
    (root / "mdb001.pgm").write_bytes(f"P5\n{w} {h}\n255\n".encode() + img.tobytes())
    pgm_writer(root / "mdb002.pgm", h, w)
    (root / "Info.txt").write_text("mdb001 F CIRC M 40 60 3\nmdb002 F NORM\n")
    res = ingest("mias", root, tmp_path / "o.csv")
    le = parse_lesions(res.manifest.set_index("image_id").loc["mdb001", "lesions"])
    mask = rasterize_lesions(le, (h, w))
    rr, cc = np.nonzero(mask == 2)
    assert abs(rr.mean() - 20) <= 1 and abs(cc.mean() - 40) <= 1


def test_mias_malformed_lines_and_missing_files(tmp_path, pgm_writer):
    lines = [
        "mdb001 G CIRC B 30 10 5",
        "mdb002 G XYZZ B 1 2 3",  # unknown class -> line + image rejected
        "mdb003 Q NORM",  # unknown background -> rejected
        "mdb004 D CIRC B 10 abc 4",  # non-numeric location: pathology kept, geometry dropped
        "mdb005 F CIRC B 10 20",  # wrong field count (partial location)
        "mdb006 F CIRC",  # abnormality without severity -> rejected
        "mdb007 F NORM",  # listed, PGM missing
        "mdbx F NORM",  # unreadable reference number
    ]
    sizes = {f"mdb00{i}": (32, 32) for i in (1, 2, 3, 4, 5, 6, 8)}  # mdb008 not listed
    root = make_mias(tmp_path / "bad", lines, sizes, pgm_writer)
    res = ingest("mias", root, tmp_path / "o.csv")  # must not raise
    ids = set(res.manifest["image_id"])
    assert ids == {"mdb001", "mdb004", "mdb005"}
    rej = res.qc.rejected
    info_rows = [r for r in rej if r.path.endswith("Info.txt")]
    header_lines = HEADER.count("\n")
    # every malformed line is named with its line number in Info.txt
    for offset in (1, 2, 3, 4, 5, 7):
        assert any(f"line {header_lines + offset + 1}:" in r.reason for r in info_rows), offset
    reasons = {r.reason.split(":")[0] for r in rej}
    assert {"malformed Info.txt line", "file missing", "incomplete truth", "not listed in Info.txt"} <= reasons
    m = res.manifest.set_index("image_id")
    assert m.loc["mdb004", "lesions"] == "" and m.loc["mdb004", "outcome"] == "benign"
    assert any(r.image_id == "mdb007" and r.reason.startswith("file missing") for r in rej)
    assert any(r.image_id == "mdb008" for r in rej)


def test_mias_corrupt_pgm_rejected(tmp_path, pgm_writer):
    root = make_mias(tmp_path / "c", ["mdb001 F NORM", "mdb002 F NORM"], {"mdb001": (16, 16)}, pgm_writer)
    (root / "mdb002.pgm").write_bytes(b"P5\n16 16\n255\n" + b"\0" * 10)  # truncated pixels
    res = ingest("mias", root, tmp_path / "o.csv")
    assert list(res.manifest["image_id"]) == ["mdb001"]
    assert any("truncated" in r.reason and r.image_id == "mdb002" for r in res.qc.rejected)
    with pytest.raises(InputError):
        read_pgm_size(root / "Info.txt")


def test_mias_no_info_is_an_error(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="Info.txt"):
        get_adapter("mini-mias").load(tmp_path / "e", qc=QCTable())


def test_real_mini_mias(mias_dir, tmp_path):
    """The real development folder: counts computed from Info.txt itself, not constants."""
    res = ingest("mias", mias_dir, tmp_path / "mias.parquet")
    df = res.manifest
    pgms = sorted(p.stem for p in mias_dir.glob("mdb*.pgm"))
    assert len(df) == len(pgms) - len([r for r in res.qc.rejected if r.image_id in pgms])
    # recompute labels independently from Info.txt
    sev: dict[str, set[str]] = {}
    for line in (mias_dir / "Info.txt").read_text(encoding="latin-1").splitlines():
        t = line.split()
        if t and t[0].startswith("mdb") and len(t) >= 3:
            sev.setdefault(t[0], set()).update(t[3:4] if t[2] != "NORM" else [])
    for iid, lab in zip(df["image_id"], df["label"], strict=True):
        assert lab == (1 if "M" in sev[iid] else 0), iid
    assert df["patient_id"].nunique() * 2 >= len(df)
    # every patient is a pair (odd right, even left)
    for iid, pid, lat in zip(df["image_id"], df["patient_id"], df["laterality"], strict=True):
        n = int(iid[3:])
        assert lat == ("R" if n % 2 else "L")
        assert iid in pid.split("-") or f"mdb{pid.split('-')[1]}" == iid
    assert df.groupby("patient_id").size().max() <= 2
    # every lesion centre lies inside the image after the y flip
    for s, h in zip(df["lesions"], df["height"], strict=True):
        for le in json.loads(s) if s else []:
            assert 0 <= le["cy"] <= h
    # the README's worked example: mdb001 G CIRC B 535 425 197 -> cy = 1024 - 425
    if "mdb001" in set(df["image_id"]):
        le = json.loads(df.set_index("image_id").loc["mdb001", "lesions"])[0]
        assert (le["cx"], le["cy"], le["r"]) == (535, 1024 - 425, 197)
    b = breast_labels(df)
    e = exam_labels(df)
    assert len(b) == len(df) and len(e) == df["patient_id"].nunique()
    assert int(e["label"].sum()) == df.groupby("patient_id")["label"].max().sum()
