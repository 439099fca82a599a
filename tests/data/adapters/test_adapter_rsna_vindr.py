"""RSNA 2023 and VinDr-Mammo adapters on fixtures in their real CSV/folder layouts."""

from __future__ import annotations

import json

import pytest

from mammolens.data.ingest import breast_labels, exam_labels, ingest
from mammolens.errors import InputError

RSNA_HEADER = "site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,implant,density,machine_id,difficult_negative_case"


@pytest.fixture
def rsna(tmp_path, write_dicom):
    root = tmp_path / "rsna"
    rows = [
        "2,10006,462822612,L,CC,61.0,0,0,0,,0,,29,False",
        "2,10006,1459541791,L,MLO,61.0,0,0,0,,0,,29,False",
        "2,10006,1864590858,R,MLO,61.0,1,1,1,0,0,,29,False",
        "1,10011,220375232,L,CC,55.0,0,1,0,0,1,B,21,True",
        "1,10011,270344397,L,AT,55.0,0,0,0,,0,B,21,False",
        "1,10011,999,L,CC,55.0,0,0,0,,0,B,21,False",  # DICOM missing
        "1,10011,1000,X,CC,55.0,0,0,0,,0,B,21,False",  # bad laterality
        "1,10011,1001,L,CC,55.0",  # malformed: wrong field count
    ]
    root.mkdir()
    (root / "train.csv").write_text(RSNA_HEADER + "\n" + "\n".join(rows) + "\n")
    for r in rows[:5]:
        f = r.split(",")
        write_dicom(root / "train_images" / f[1] / f"{f[2]}.dcm", patient_id=f[1], laterality=f[3], view=f[4], sop=f"1.2.826.{f[2]}")
    return root


def test_rsna(rsna, tmp_path):
    res = ingest("rsna", rsna, tmp_path / "r.csv")
    df = res.manifest.set_index("image_id")
    assert set(df.index) == {"462822612", "1459541791", "1864590858", "220375232", "270344397"}
    r = df.loc["1864590858"]
    assert (r.patient_id, r.study_id, r.laterality, r.view, r.label, r.outcome, r.age, r.site) == (
        "10006", "10006", "R", "MLO", 1, "malignant", 61.0, "2")
    assert r.machine_id == "29" and r.manufacturer == "Hologic" and r.sop_instance_uid == "1.2.826.1864590858"
    assert df.loc["220375232", "outcome"] == "benign"  # biopsied, no cancer
    assert df.loc["462822612", "outcome"] == "normal" and df.loc["462822612", "density"] == ""
    assert df.loc["220375232", "density"] == "B" and "implant" in df.loc["220375232", "flags"]
    assert "non_standard_view" in df.loc["270344397", "flags"]
    reasons = [r.reason for r in res.qc.rejected]
    assert any(x.startswith("file missing: train_images/10011/999.dcm (train.csv line 7)") for x in reasons)
    assert any(x.startswith("invalid row: line 8") for x in reasons)
    assert any(x.startswith("malformed line: line 9") for x in reasons)
    b = breast_labels(res.manifest)
    assert b.set_index(["patient_id", "laterality"]).loc[("10006", "R"), "label"] == 1
    assert b.set_index(["patient_id", "laterality"]).loc[("10006", "L"), "label"] == 0
    e = exam_labels(res.manifest).set_index("patient_id")
    assert e.loc["10006", "label"] == 1 and e.loc["10011", "label"] == 0 and e.loc["10006", "images"] == 3


def test_rsna_no_headers_and_test_table(rsna, tmp_path):
    (rsna / "test.csv").write_text("site_id,patient_id,image_id,laterality,view,age,implant,machine_id,prediction_id\n"
                                   "2,10006,462822612,L,CC,61,0,29,10006_L\n")
    (rsna / "test_images").symlink_to(rsna / "train_images")
    res = ingest("rsna", rsna, tmp_path / "t.csv", table="test.csv", images_dir="test_images", read_headers=False)
    row = res.manifest.iloc[0]
    assert row.image_id == "462822612" and row.manufacturer == "" and row.label is __import__("pandas").NA


def test_rsna_missing_table(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="train.csv"):
        ingest("rsna", tmp_path / "empty", tmp_path / "x.csv")


BREAST_HEADER = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
FINDING_HEADER = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"


@pytest.fixture
def vindr(tmp_path, write_dicom):
    root = tmp_path / "vindr"
    root.mkdir()
    breast = [
        "s1,se1,i1,L,CC,40,32,BI-RADS 1,DENSITY C,training",
        "s1,se1,i2,L,MLO,40,32,BI-RADS 1,DENSITY C,training",
        "s1,se2,i3,R,CC,40,32,BI-RADS 4,DENSITY C,training",
        "s2,se3,i4,R,MLO,40,32,BI-RADS 3,DENSITY A,test",
        "s2,se3,i5,R,CC,40,32,BI-RADS 9,DENSITY A,test",  # invalid BI-RADS
        "s2,se3,i6,R,CC,40,32,BI-RADS 2,DENSITY A,test",  # file missing
    ]
    findings = [
        "s1,se1,i1,L,CC,40,32,BI-RADS 1,DENSITY C,['No Finding'],,,,,,training",
        "s1,se2,i3,R,CC,40,32,BI-RADS 4,DENSITY C,\"['Mass', 'Suspicious Calcification']\",BI-RADS 4,3.5,4.25,20.0,30.0,training",
        "s2,se3,i4,R,MLO,40,32,BI-RADS 3,DENSITY A,['Focal Asymmetry'],BI-RADS 3,1,2,10,12,test",
        "s2,se3,i4,R,MLO,40,32,BI-RADS 3,DENSITY A,['Mass'],BI-RADS 3,x,2,10,12,test",  # bad box
    ]
    (root / "breast-level_annotations.csv").write_text(BREAST_HEADER + "\n" + "\n".join(breast) + "\n")
    (root / "finding_annotations.csv").write_text(FINDING_HEADER + "\n" + "\n".join(findings) + "\n")
    (root / "metadata.csv").write_text(
        "Series Instance UID,SOP Instance UID,Patient's Age,View Position,Image Laterality,Manufacturer,Manufacturer's Model Name\n"
        "se1,i1,053Y,CC,L,SIEMENS,Mammomat Inspiration\n")
    for r in breast[:5]:
        f = r.split(",")
        write_dicom(root / "images" / f[0] / f"{f[2]}.dicom", patient_id=f[0], laterality=f[3], view=f[4], sop=f"1.2.{ord(f[2][1])}")
    return root


def test_vindr(vindr, tmp_path):
    res = ingest("vindr", vindr, tmp_path / "v.csv", read_headers=False)
    df = res.manifest.set_index("image_id")
    assert set(df.index) == {"i1", "i2", "i3", "i4"}
    assert df.loc["i3", "label"] == 1 and df.loc["i3", "outcome"] == "malignant"
    assert df.loc["i1", "label"] == 0 and df.loc["i1", "outcome"] == "normal"
    assert df.loc["i4", "label"] == 0 and df.loc["i4", "outcome"] == "benign"
    assert df.loc["i1", "density"] == "C" and df.loc["i1", "density_original"] == "DENSITY C"
    assert df.loc["i4", "dataset_split"] == "test" and df.loc["i4", "split"] == ""
    assert df.loc["i1", "patient_id"] == "s1" == df.loc["i3", "study_id"]
    les = json.loads(df.loc["i3", "lesions"])
    assert les == [{"shape": "box", "x0": 3.5, "y0": 4.25, "x1": 20.0, "y1": 30.0, "pathology": "malignant",
                    "kind": "mass", "birads": "4", "source": "Mass;Suspicious Calcification"}]
    les4 = json.loads(df.loc["i4", "lesions"])
    assert len(les4) == 1 and les4[0]["pathology"] == "benign" and les4[0]["kind"] == "focal_asymmetry"
    assert df.loc["i1", "lesions"] == ""
    # metadata.csv fills manufacturer and age without reading headers
    assert df.loc["i1", "manufacturer"] == "Siemens" and df.loc["i1", "age"] == 53
    reasons = [(r.path.split("/")[-1], r.reason) for r in res.qc.rejected]
    assert any(p == "breast-level_annotations.csv" and x.startswith("invalid row: line 6") for p, x in reasons)
    assert any(x.startswith("file missing: images/s2/i6.dicom") for _, x in reasons)
    assert any(p == "finding_annotations.csv" and x.startswith("malformed line: line 5") for p, x in reasons)


def test_vindr_proxy_is_configurable(vindr, tmp_path):
    res = ingest("vindr", vindr, tmp_path / "v.csv", malignant_birads="3,4,5")
    df = res.manifest.set_index("image_id")
    assert df.loc["i4", "label"] == 1 and df.loc["i3", "label"] == 1
    assert df.loc["i3", "manufacturer"] == "Hologic"  # read from the header
