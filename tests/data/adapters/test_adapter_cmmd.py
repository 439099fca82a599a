"""CMMD (TCIA) adapter: the real download layout, an 8-bit SIGMOID-VOI DICOM tree without
View Position, and the per-breast clinical sheet as .xlsx or .csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mammolens.data.ingest import ingest
from mammolens.errors import InputError

STUDY_DIR = "07-18-2010-NA-NA-79377"
SERIES_DIR = "1.000000-NA-70244"
SHEET = [
    # ID1, LeftRight, Age, number, abnormality, classification, subtype
    ("D1-0001", "R", 44, 2, "calcification", "Benign", ""),
    ("D1-0002", "L", 51, 2, "mass", "Malignant", ""),
    ("D2-0001", "L", 62, 2, "both", "Malignant", "Luminal A"),
    ("D2-0002", "L", 58, 2, "mass", "Malignant", "triple negative"),  # imaged both breasts: R has no row
    ("D1-0099", "L", 40, 2, "mass", "Benign", ""),  # not imaged: flagged
    ("D1-0003", "R", 47, 2, "mass", "Unsure", ""),  # invalid classification: rejected
]


def _write_cmmd_dicom(path: Path, pid: str, lat: str, view: str, n: int) -> None:
    from mammolens.data.synthetic import deterministic_uid, write_mammogram_dicom

    rng = np.random.default_rng(n)
    px = rng.integers(0, 256, size=(48, 40), dtype=np.uint16)
    write_mammogram_dicom(
        path, px, manufacturer="GE MEDICAL SYSTEMS", laterality=lat, view=view, patient_id=pid,
        study_uid=deterministic_uid("cmmd", pid), sop_uid=deterministic_uid("cmmd", pid, lat, view),
        bits_stored=8, window=(127.5, 255.0), voi_function="SIGMOID", rescale=(1.0, 0.0), age=None,
        extra={"ViewPosition": None, "PatientAge": None},  # CMMD: view only in the View Code Sequence
    )


def make_cmmd(root: Path, *, sheet: str = "xlsx") -> Path:
    """The TCIA layout: root/CMMD/<patient>/<study>/<series>/1-N.dcm + the clinical sheet."""
    imaged = {"D1-0001": ["R"], "D1-0002": ["L"], "D2-0001": ["L"], "D2-0002": ["L", "R"], "D1-0003": ["R"]}
    n = 0
    for pid, sides in imaged.items():
        k = 1
        for lat in sides:
            for view in ("CC", "MLO"):
                n += 1
                _write_cmmd_dicom(root / "CMMD" / pid / STUDY_DIR / SERIES_DIR / f"1-{k}.dcm", pid, lat, view, n)
                k += 1
    (root / "CMMD" / "D1-0001" / STUDY_DIR / SERIES_DIR / "1-9.dcm").write_bytes(b"\0" * 64)  # corrupt
    (root / "metadata.csv").write_text("Series UID,Collection\n1.2.3,CMMD\n")  # NBIA's list: not DICOM
    df = pd.DataFrame(SHEET, columns=["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"])
    if sheet == "xlsx":
        df.to_excel(root / "CMMD_clinicaldata_revision.xlsx", index=False)
    else:
        df.to_csv(root / "CMMD_clinicaldata_revision.csv", index=False)
    return root


@pytest.fixture(scope="module")
def cmmd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cmmd(tmp_path_factory.mktemp("cmmd"))


def _by(df: pd.DataFrame) -> dict[tuple[str, str, str], pd.Series]:
    return {(r.patient_id, r.laterality, r.view): r for r in df.itertuples(index=False)}


def test_cmmd_labels_views_and_qc(cmmd: Path, tmp_path: Path) -> None:
    res = ingest("cmmd", cmmd, tmp_path / "m.csv")
    df = res.manifest
    assert len(df) == 12  # 5 patients' images, the corrupt file rejected
    rows = _by(df)
    assert {v for (_, _, v) in rows} == {"CC", "MLO"}  # from ViewCodeSequence alone
    assert rows[("D1-0001", "R", "CC")].label == 0 and rows[("D1-0001", "R", "CC")].outcome == "benign"
    assert rows[("D1-0002", "L", "MLO")].label == 1 and rows[("D1-0002", "L", "MLO")].outcome == "malignant"
    d2 = rows[("D2-0001", "L", "CC")]
    assert d2.label == 1 and d2.subtype == "Luminal A" and d2.abnormality == "both" and d2.age == 62
    assert d2.cmmd_subset == "D2" and d2.dataset == "cmmd" and str(d2.cmmd_images) == "2"
    assert pd.isna(rows[("D2-0002", "R", "CC")].label)  # imaged, no sheet row: unknown, not normal
    assert rows[("D2-0002", "L", "CC")].label == 1
    assert pd.isna(rows[("D1-0003", "R", "CC")].label)  # its row was rejected
    assert rows[("D1-0002", "L", "CC")].manufacturer == "GE"
    assert "classification" not in df.columns and "_rel" not in df.columns
    qc = res.qc.to_frame()
    rej = qc[qc["severity"] == "reject"]["reason"].tolist()
    flags = qc[qc["severity"] == "flag"]["reason"].tolist()
    assert any("1-9.dcm" in p for p in qc[qc["severity"] == "reject"]["path"])
    assert any("classification must be Malignant, Benign or Normal" in r and "line 7" in r for r in rej)
    assert any("matches no image" in f and "D1-0099" in f for f in flags)
    assert sum("no clinical row: D2-0002 R" in f for f in flags) == 2
    assert not any("metadata.csv" in p for p in qc["path"])  # NBIA's list is not read as DICOM
    s = res.summary()
    assert s["positive_breasts"] == 3 and s["label_unknown"] == 4


def test_cmmd_sheet_as_csv_gives_the_same_manifest(cmmd: Path, tmp_path: Path) -> None:
    other = make_cmmd(tmp_path / "csv", sheet="csv")
    a = ingest("cmmd", cmmd, tmp_path / "a.csv").manifest
    b = ingest("cmmd", other, tmp_path / "b.csv").manifest
    cols = ["image_id", "patient_id", "laterality", "view", "label", "outcome", "age", "subtype"]
    pd.testing.assert_frame_equal(a[cols].sort_values("image_id").reset_index(drop=True),
                                  b[cols].sort_values("image_id").reset_index(drop=True))


def test_cmmd_sigmoid_8bit_pixels_are_read(cmmd: Path) -> None:
    from mammolens.io import read_image

    f = next((cmmd / "CMMD" / "D1-0002").rglob("1-1.dcm"))
    img = read_image(f)
    import pydicom

    ds = pydicom.dcmread(f)
    assert ds.BitsStored == 8 and ds.VOILUTFunction == "SIGMOID" and "ViewPosition" not in ds
    raw = ds.pixel_array.astype(float)
    want = 1.0 / (1.0 + np.exp(-4.0 * (raw - 127.5) / 255.0))  # PS3.3 C.11.2.1.3.1
    want = (want - want.min()) / (want.max() - want.min())
    got = img.pixels.astype(float)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999


def test_cmmd_missing_sheet_is_a_clear_error(tmp_path: Path) -> None:
    src = make_cmmd(tmp_path / "x")
    (src / "CMMD_clinicaldata_revision.xlsx").unlink()
    with pytest.raises(InputError, match="no CMMD clinical sheet"):
        ingest("cmmd", src, tmp_path / "m.csv")


def test_dicom_annotations_join_per_breast_with_cmmd_sheet(cmmd: Path, tmp_path: Path) -> None:
    """`ingest dicom --annotations` takes CMMD's per-breast sheet as it is (ID1, LeftRight, classification)."""
    res = ingest("dicom", cmmd / "CMMD", tmp_path / "m.csv", annotations=cmmd / "CMMD_clinicaldata_revision.xlsx")
    rows = _by(res.manifest)
    assert rows[("D1-0002", "L", "CC")].label == 1 and rows[("D1-0001", "R", "MLO")].label == 0
    assert rows[("D2-0001", "L", "MLO")].age == 62 and rows[("D2-0001", "L", "MLO")].outcome == "malignant"
    assert pd.isna(rows[("D2-0002", "R", "CC")].label)


def test_dicom_annotations_image_row_beats_breast_row_and_study_key(tmp_path: Path, write_dicom) -> None:
    src = tmp_path / "t"
    write_dicom(src / "a.dcm", patient_id="P1", laterality="L", view="CC", sop="1.2.840.5.1", study="1.2.840.9.1")
    write_dicom(src / "b.dcm", patient_id="P1", laterality="L", view="MLO", sop="1.2.840.5.2", study="1.2.840.9.1")
    write_dicom(src / "c.dcm", patient_id="P1", laterality="L", view="CC", sop="1.2.840.5.3", study="1.2.840.9.2")
    write_dicom(src / "d.dcm", patient_id="P1", laterality="R", view="CC", sop="1.2.840.5.4", study="1.2.840.9.2")
    ann = pd.DataFrame([
        {"sop_instance_uid": "1.2.840.5.2", "patient_id": "", "laterality": "", "study_id": "", "label": "0", "outcome": "normal"},
        {"sop_instance_uid": "", "patient_id": "P1", "laterality": "L", "study_id": "1.2.840.9.1", "label": "1", "outcome": "malignant"},
        {"sop_instance_uid": "", "patient_id": "P1", "laterality": "B", "study_id": "1.2.840.9.2", "label": "0", "outcome": "benign"},
        {"sop_instance_uid": "", "patient_id": "P1", "laterality": "L", "study_id": "1.2.840.9.1", "label": "0", "outcome": "normal"},
        {"sop_instance_uid": "", "patient_id": "P1", "laterality": "X", "study_id": "", "label": "1", "outcome": ""},
    ])
    ann.to_csv(tmp_path / "ann.csv", index=False)
    res = ingest("dicom", src, tmp_path / "m.csv", annotations=tmp_path / "ann.csv")
    lab = dict(zip(res.manifest["image_id"], res.manifest["label"], strict=True))
    assert lab == {"1.2.840.5.1": 1, "1.2.840.5.2": 0, "1.2.840.5.3": 0, "1.2.840.5.4": 0}
    reasons = res.qc.to_frame()["reason"].tolist()
    assert any("duplicate annotation" in r and "line 5" in r for r in reasons)
    assert any("laterality must be L, R or B" in r for r in reasons)


def test_cli_ingest_cmmd(cmmd: Path, tmp_path: Path) -> None:
    from mammolens.cli import app

    r = CliRunner().invoke(app, ["ingest", "cmmd", str(cmmd), "-o", str(tmp_path / "m.csv"), "--json"],
                           env={"COLUMNS": "300"})
    assert r.exit_code == 3, r.output  # the corrupt file and the bad sheet row were rejected
    s = json.loads(r.stdout[r.stdout.index("{"):])
    assert s["format"] == "cmmd" and s["images"] == 12 and s["malignant"] == 6
