"""CBIS-DDSM, INbreast and the generic CSV adapter on fixtures in their real layouts."""

from __future__ import annotations

import json
import plistlib

import numpy as np
import pandas as pd
import pytest

from mammolens.data.adapters.csv_table import parse_mapping
from mammolens.data.ingest import ingest
from mammolens.errors import ConfigError

MASS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,"
               "mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path")
CALC_HEADER = ("patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,"
               "calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path")
UID = "1.3.6.1.4.1.9590.100.1.2"


@pytest.fixture
def cbis(tmp_path, write_dicom):
    root = tmp_path / "cbis"
    tree = root / "CBIS-DDSM"
    # TCIA downloader layout: dated study folders and described series folders
    write_dicom(tree / "Mass-Training_P_00001_LEFT_CC" / "07-20-2016-DDSM-74994" / "1.000000-full mammogram images-24515" / "1-1.dcm",
                patient_id="Mass-Training_P_00001_LEFT_CC", laterality="L", view="CC", sop="1.1.1", rows=60, cols=40)
    write_dicom(tree / "Mass-Training_P_00001_LEFT_CC_1" / "07-21-2016-DDSM-1" / "1.000000-ROI mask images-1" / "1-1.dcm",
                patient_id="P_00001", sop="1.1.2", rows=60, cols=40)
    write_dicom(tree / "Mass-Training_P_00001_LEFT_CC_1" / "07-21-2016-DDSM-1" / "1.000000-cropped images-2" / "1-1.dcm",
                patient_id="P_00001", sop="1.1.3", rows=16, cols=16)
    # exactly as written in the CSV (the classic UID layout); no series names: larger file = mask
    full2 = f"Calc-Training_P_00001_LEFT_CC/{UID}.1/{UID}.2/000000.dcm"
    write_dicom(tree / full2, patient_id="P_00001", sop="1.1.4", rows=60, cols=40)
    write_dicom(tree / f"Calc-Training_P_00001_LEFT_CC_1/{UID}.3/{UID}.4/000000.dcm", patient_id="P", sop="1.1.5", rows=16, cols=16)
    write_dicom(tree / f"Calc-Training_P_00001_LEFT_CC_1/{UID}.3/{UID}.4/000001.dcm", patient_id="P", sop="1.1.6", rows=60, cols=40)
    write_dicom(tree / "Mass-Test_P_00017_RIGHT_MLO" / "a" / "b" / "1-1.dcm", patient_id="P_00017", sop="1.1.7", rows=60, cols=40)
    mass_train = [
        f"P_00001,3,LEFT,CC,1,mass,IRREGULAR,SPICULATED,5,MALIGNANT,5,Mass-Training_P_00001_LEFT_CC/{UID}.9/{UID}.8/000000.dcm,"
        f"Mass-Training_P_00001_LEFT_CC_1/{UID}.7/{UID}.6/000000.dcm,\"Mass-Training_P_00001_LEFT_CC_1/{UID}.7/{UID}.6/000001.dcm\n\"",
        f"P_00099,2,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,Mass-Training_P_00099_LEFT_CC/{UID}.1/{UID}.1/000000.dcm,x,y",
        "P_00100,2,LEFT,CC,1,mass,OVAL",  # malformed
        f"P_00101,2,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,UNSURE,3,Mass-Training_P_00001_LEFT_CC/{UID}.1/000000.dcm,x,y",
    ]
    calc_train = [
        f"P_00001,3,LEFT,CC,1,calcification,PLEOMORPHIC,CLUSTERED,4,BENIGN_WITHOUT_CALLBACK,2,{full2},"
        f"Calc-Training_P_00001_LEFT_CC_1/{UID}.3/{UID}.4/000000.dcm,Calc-Training_P_00001_LEFT_CC_1/{UID}.3/{UID}.4/000001.dcm",
    ]
    mass_test = [
        f"P_00017,4,RIGHT,MLO,1,mass,ROUND,OBSCURED,4,BENIGN,3,Mass-Test_P_00017_RIGHT_MLO/{UID}.5/{UID}.5/000000.dcm,"
        f"Mass-Test_P_00017_RIGHT_MLO_1/{UID}.5/000000.dcm,Mass-Test_P_00017_RIGHT_MLO_1/{UID}.5/000001.dcm",
    ]
    root.mkdir(exist_ok=True)
    (root / "mass_case_description_train_set.csv").write_text(MASS_HEADER + "\n" + "\n".join(mass_train) + "\n")
    (root / "calc_case_description_train_set.csv").write_text(CALC_HEADER + "\n" + "\n".join(calc_train) + "\n")
    (root / "mass_case_description_test_set.csv").write_text(MASS_HEADER + "\n" + "\n".join(mass_test) + "\n")
    return root


def test_cbis_ddsm(cbis, tmp_path):
    res = ingest("cbis-ddsm", cbis, tmp_path / "c.csv")
    df = res.manifest.set_index("image_id")
    assert set(df.index) == {"P_00001_LEFT_CC", "P_00017_RIGHT_MLO"}
    a = df.loc["P_00001_LEFT_CC"]
    # mass (MALIGNANT) and calcification (BENIGN_WITHOUT_CALLBACK) lesions merged on one image
    assert a.label == 1 and a.outcome == "malignant" and a.density == "C" and a.patient_id == "P_00001"
    assert a.laterality == "L" and a.view == "CC" and a.dataset_split == "train"
    les = json.loads(a.lesions)
    assert sorted((le["kind"], le["pathology"], le["source"]) for le in les) == [
        ("calcification", "benign", "BENIGN_WITHOUT_CALLBACK"), ("mass", "malignant", "MALIGNANT")]
    by_kind = {le["kind"]: le for le in les}
    assert "ROI mask images" in by_kind["mass"]["path"]  # chosen by series name
    assert by_kind["calcification"]["path"].endswith("000001.dcm")  # exact path from the CSV
    assert by_kind["mass"]["birads"] == "5" and by_kind["mass"]["subtlety"] == "5"
    b = df.loc["P_00017_RIGHT_MLO"]
    assert b.label == 0 and b.outcome == "benign" and b.dataset_split == "test" and b.lesions == ""
    assert "mask_missing" in b["flags"]
    reasons = [r.reason for r in res.qc.rejected]
    # the first record spans lines 2-3 (a quoted path ending in a newline, as in the real CSVs)
    assert any(x.startswith("file missing: full mammogram") and "line 4" in x for x in reasons)
    assert any(x.startswith("malformed line: line 5") for x in reasons)
    assert any("unknown pathology 'UNSURE'" in x for x in reasons)
    assert int(a.height) == 60


def _inbreast_roi(points: list[tuple[float, float]], name: str) -> dict:
    return {"Name": name, "NumberOfPoints": len(points), "Point_px": [f"({x}, {y})" for x, y in points],
            "Point_mm": [f"({x / 14}, {y / 14})" for x, y in points], "Area": 1.0, "Center": "(0, 0)", "Type": 15}


@pytest.fixture
def inbreast(tmp_path, write_dicom):
    root = tmp_path / "INbreast Release 1.0"
    cases = [  # File Name, patient hash, Laterality, View, ACR, Bi-Rads
        ("22678622", "61b13c59bcba149e", "R", "CC", "4", "1"),
        ("22678646", "61b13c59bcba149e", "R", "MLO", "4", "5"),
        ("20586908", "6bd6ea5d3a0e1a4c", "L", "CC", "", "4c"),
        ("20586934", "6bd6ea5d3a0e1a4c", "L", "MLO", "2", "2"),
        ("11111111", "ffffffffffffffff", "L", "CC", "2", "2"),  # no DICOM
        ("22222222", "eeeeeeeeeeeeeeee", "L", "CC", "2", "9"),  # invalid Bi-Rads
    ]
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    for fn, ph, lat, view, acr, br in cases:
        lines.append(f"removed;removed;{lat};{view};201001;{fn};{acr or '     '};{br}")
        if fn.startswith(("1111", "2222")):
            continue
        dview = "ML" if view == "MLO" else view
        write_dicom(root / "AllDICOMs" / f"{fn}_{ph}_MG_{lat}_{dview}_ANON.dcm", patient_id=ph, laterality=lat, view=view,
                    sop=f"1.3.{fn}")
    lines.append("removed;removed;L;CC;201001")  # malformed
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    (root / "AllXML").mkdir(parents=True)
    plist = {"Images": [{"ImageIndex": 0, "NumberOfROIs": 2, "ROIs": [
        _inbreast_roi([(10, 12), (20, 12), (20, 25), (10, 25)], "Mass"),
        _inbreast_roi([(5.5, 6.5)], "Calcification"),
    ]}]}
    with (root / "AllXML" / "22678646.xml").open("wb") as fh:
        plistlib.dump(plist, fh)
    (root / "AllXML" / "20586934.xml").write_text("<plist>broken")
    return root


def test_inbreast(inbreast, tmp_path):
    res = ingest("inbreast", inbreast, tmp_path / "i.csv")
    df = res.manifest.set_index("image_id")
    assert set(df.index) == {"22678622", "22678646", "20586908", "20586934"}
    a = df.loc["22678646"]
    assert (a.patient_id, a.study_id, a.laterality, a.view, a.label, a.outcome, a.density, a.birads) == (
        "61b13c59bcba149e", "61b13c59bcba149e_201001", "R", "MLO", 1, "malignant", "D", "5")
    les = json.loads(a.lesions)
    assert les[0] == {"shape": "polygon", "points": [[10.0, 12.0], [20.0, 12.0], [20.0, 25.0], [10.0, 25.0]],
                      "pathology": "malignant", "kind": "mass", "source": "Mass"}
    assert les[1]["shape"] == "point" and (les[1]["x"], les[1]["y"]) == (5.5, 6.5) and les[1]["pathology"] == "unknown"
    assert df.loc["20586908", "label"] == 1 and df.loc["20586908", "density"] == ""  # 4c proxy, blank ACR
    assert df.loc["22678622", "outcome"] == "normal" and df.loc["20586934", "outcome"] == "benign"
    assert "annotation_unreadable" in df.loc["20586934", "flags"]
    assert df.loc["22678622", "manufacturer"] == "Hologic"
    reasons = [r.reason for r in res.qc.rejected]
    assert any(x.startswith("file missing: no DICOM for File Name 11111111") for x in reasons)
    assert any(x.startswith("invalid row: line 7") for x in reasons)
    assert any(x.startswith("malformed line: line 8") for x in reasons)


def test_inbreast_proxy_configurable(inbreast, tmp_path):
    res = ingest("inbreast", inbreast, tmp_path / "i.csv", malignant_birads=["5", "6"], read_headers=False)
    df = res.manifest.set_index("image_id")
    assert df.loc["20586908", "label"] == 0 and df.loc["22678646", "label"] == 1


def test_csv_generic(tmp_path):
    import cv2

    root = tmp_path / "t"
    (root / "img").mkdir(parents=True)
    for n in ("a", "b", "c"):
        cv2.imwrite(str(root / "img" / f"{n}.png"), np.zeros((8, 6), np.uint8))
    (root / "table.csv").write_text(
        "File;Woman;Side;Proj;Cancer;Dens;Age;Scanner;lesions;Note\n"
        "img/a.png;w1;LEFT;cc;1;3;053Y;X1;[{\"shape\":\"mask\",\"path\":\"img/c.png\",\"pathology\":\"malignant\"}];first\n"
        "img/b.png;w1;RIGHT;MLO;0;DENSITY B;54;X1;;x\n"
        "img/c.png;w2;R;CC;;weird;60;X2;;x\n"
        "img/missing.png;w3;L;CC;0;A;60;X2;;x\n"
        "img/a.png;w4;Q;CC;0;A;60;X2;;x\n"
        "img/b.png;w5;L;CC;maybe;A;60;X2;;x\n"
        "img/c.png;w6;L\n"
    )
    res = ingest("csv", root / "table.csv", tmp_path / "m.csv",
                 mapping=["path=File", "patient_id=Woman", "laterality=Side", "view=Proj", "label=Cancer",
                          "density=Dens", "age=Age", "manufacturer=Scanner"])
    df = res.manifest.set_index("image_id")
    assert list(df.index) == ["img/a", "img/b", "img/c"]
    a = df.loc["img/a"]
    assert (a.patient_id, a.study_id, a.laterality, a.view, a.label, a.density, a.age, a.manufacturer) == (
        "w1", "w1", "L", "CC", 1, "C", 53.0, "X1")
    assert a.path == str((root / "img" / "a.png").resolve())
    assert json.loads(a.lesions)[0]["path"] == str(root.resolve() / "img" / "c.png")  # relative to the CSV
    assert a.Note == "first" and df.loc["img/b", "Note"] == "x"  # unmapped columns kept
    assert pd.isna(df.loc["img/c", "label"]) and df.loc["img/c", "density"] == "" and df.loc["img/c", "density_original"] == "weird"
    reasons = [r.reason for r in res.qc.rejected]
    assert any(x.startswith("file missing: img/missing.png") and "line 5" in x for x in reasons)
    assert any(x.startswith("invalid row: line 6") and "laterality" in x for x in reasons)
    assert any(x.startswith("invalid row: line 7") and "label" in x for x in reasons)
    assert any(x.startswith("malformed line: line 8") for x in reasons)


def test_csv_mapping_errors(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="patient_id"):
        ingest("csv", tmp_path / "t.csv", tmp_path / "m.csv", mapping=["path=a"])
    with pytest.raises(ConfigError, match="not in the table"):
        ingest("csv", tmp_path / "t.csv", tmp_path / "m.csv", mapping=["path=zzz"])
    with pytest.raises(ConfigError):
        parse_mapping(["no-equals-sign"])
    with pytest.raises(ConfigError, match="does not take"):
        ingest("mias", tmp_path, tmp_path / "m.csv", mapping=["a=b"])


def test_inbreast_spreadsheet_table(inbreast, tmp_path):
    """The release's sheet read as a spreadsheet gives the same images as the CSV."""
    import pandas as pd

    table = inbreast / "INbreast.csv"
    df = pd.read_csv(table, sep=";", dtype=str, keep_default_na=False)
    df = df[df["File Name"] != ""]
    df.to_excel(inbreast / "INbreast.xlsx", index=False)
    table.unlink()
    res = ingest("inbreast", inbreast, tmp_path / "x.csv", read_headers=False)
    assert set(res.manifest["image_id"]) == {"22678622", "22678646", "20586908", "20586934"}
    assert res.manifest.set_index("image_id").loc["22678646", "label"] == 1
