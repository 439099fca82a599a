"""DICOM folder adapter: header metadata, QC rejections/flags and the annotations join."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mammolens.data.ingest import ingest
from mammolens.data.manifest import read_manifest


@pytest.fixture
def tree(tmp_path, write_dicom):
    src = tmp_path / "dicom"
    write_dicom(src / "p1" / "a.dcm", patient_id="P1", laterality="L", view="CC", sop="1.2.840.1.1", study="1.2.840.9.1")
    write_dicom(src / "p1" / "b.dcm", patient_id="P1", laterality="L", view="MLO", sop="1.2.840.1.2", study="1.2.840.9.1")
    write_dicom(src / "p2" / "c", patient_id="P2", laterality="R", view="CC", sop="1.2.840.1.3", study="1.2.840.9.2",
                manufacturer="GE MEDICAL SYSTEMS", age=61)
    # flagged but kept
    write_dicom(src / "p2" / "proc.dcm", patient_id="P2", laterality="R", view="MLO", sop="1.2.840.1.4", study="1.2.840.9.2",
                presentation_intent="FOR PROCESSING")
    write_dicom(src / "p2" / "spot.dcm", patient_id="P2", laterality="R", view="CC", sop="1.2.840.1.5", study="1.2.840.9.2",
                view_modifiers=["spot"])
    write_dicom(src / "p3" / "implant.dcm", patient_id="P3", laterality="L", view="XCCL", sop="1.2.840.1.6", study="1.2.840.9.3",
                implant=True)
    write_dicom(src / "p3" / "mag.dcm", patient_id="P3", laterality="L", view="CC", sop="1.2.840.1.8", study="1.2.840.9.3",
                view_modifiers=["magnification"])
    # rejected
    write_dicom(src / "p4" / "ct.dcm", patient_id="P4", modality="CT", sop="1.2.840.1.7",
                extra={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"})  # CT Image Storage
    write_dicom(src / "p1" / "dup.dcm", patient_id="P1", sop="1.2.840.1.1", study="1.2.840.9.1")
    (src / "notes.txt").write_text("not a dicom file")
    good = (src / "p1" / "a.dcm").read_bytes()
    (src / "p1" / "truncated.dcm").write_bytes(good[:200])
    (src / ".hidden").write_text("skipped")
    return src


def test_dicom_metadata_and_qc(tree, tmp_path):
    res = ingest("dicom", tree, tmp_path / "m.csv")
    df = res.manifest.set_index("image_id")
    assert set(df.index) == {f"1.2.840.1.{i}" for i in (1, 2, 3, 4, 5, 6, 8)}
    a = df.loc["1.2.840.1.1"]
    assert (a.patient_id, a.study_id, a.laterality, a.view, a.manufacturer) == ("P1", "1.2.840.9.1", "L", "CC", "Hologic")
    assert a.age == 55 and int(a.height) == 40 and int(a.width) == 32
    assert df.loc["1.2.840.1.3", "manufacturer"] == "GE" and df.loc["1.2.840.1.3", "age"] == 61
    assert "for_processing" in df.loc["1.2.840.1.4", "flags"]
    assert "spot" in df.loc["1.2.840.1.5", "flags"]
    assert "implant" in df.loc["1.2.840.1.6", "flags"] and "non_standard_view" in df.loc["1.2.840.1.6", "flags"]
    assert "magnification" in df.loc["1.2.840.1.8", "flags"]
    assert df.loc["1.2.840.1.1", "flags"] == ""
    assert df["label"].isna().all()  # no annotations: labels unknown
    rej = {r.path.split("/")[-1]: r.reason for r in res.qc.rejected}
    assert set(rej) == {"ct.dcm", "dup.dcm", "notes.txt", "truncated.dcm"}
    assert rej["ct.dcm"].startswith("not a mammogram")
    assert rej["dup.dcm"].startswith("duplicate SOP Instance UID")
    assert rej["notes.txt"].startswith("not DICOM")
    flagged = {r.image_id for r in res.qc.flagged}
    assert {"1.2.840.1.4", "1.2.840.1.5", "1.2.840.1.6", "1.2.840.1.8"} <= flagged


def test_dicom_annotations_join(tree, tmp_path):
    mask = tmp_path / "ann" / "masks" / "m1.png"
    mask.parent.mkdir(parents=True)
    mask.write_bytes(b"")  # existence is what the adapter checks
    ann = pd.DataFrame(
        [
            {"sop_instance_uid": "1.2.840.1.1", "path": "", "image_id": "", "label": "1", "outcome": "malignant", "density": "3",
             "lesions": json.dumps([{"shape": "mask", "path": "masks/m1.png", "pathology": "malignant"}]), "site": "north"},
            {"sop_instance_uid": "", "path": "p1/b.dcm", "image_id": "", "label": "0", "outcome": "", "density": "B",
             "lesions": "", "site": ""},
            {"sop_instance_uid": "", "path": "", "image_id": "1.2.840.1.3", "label": "", "outcome": "normal", "density": "",
             "lesions": "", "site": "south"},
            {"sop_instance_uid": "9.9.9", "path": "", "image_id": "", "label": "1", "outcome": "", "density": "",
             "lesions": "", "site": ""},  # matches nothing -> flag
            {"sop_instance_uid": "1.2.840.1.5", "path": "", "image_id": "", "label": "7", "outcome": "", "density": "",
             "lesions": "", "site": ""},  # invalid label -> rejected annotation
            {"sop_instance_uid": "1.2.840.1.6", "path": "", "image_id": "", "label": "0", "outcome": "", "density": "",
             "lesions": "[{\"shape\": \"blob\"}]", "site": ""},  # invalid lesions -> rejected annotation
        ]
    )
    ann_path = tmp_path / "ann" / "annotations.csv"
    ann.to_csv(ann_path, index=False)
    with ann_path.open("a") as fh:
        fh.write("1.2.840.1.4,oops\n")  # malformed line (wrong field count)
    res = ingest("dicom", tree, tmp_path / "m.parquet", annotations=ann_path)
    df = res.manifest.set_index("image_id")
    a = df.loc["1.2.840.1.1"]
    assert a.label == 1 and a.outcome == "malignant" and a.density == "C" and a.site == "north"
    les = json.loads(a.lesions)
    assert les[0]["path"] == str(mask) and les[0]["pathology"] == "malignant"
    assert df.loc["1.2.840.1.2", "label"] == 0 and df.loc["1.2.840.1.2", "density"] == "B"
    assert pd.isna(df.loc["1.2.840.1.3", "label"]) and df.loc["1.2.840.1.3", "outcome"] == "normal"
    assert pd.isna(df.loc["1.2.840.1.5", "label"])  # its annotation was rejected
    rej = [r for r in res.qc.rejected if r.path == str(ann_path)]
    assert any("line 6" in r.reason and "label" in r.reason for r in rej)
    assert any("line 7" in r.reason and "lesions" in r.reason for r in rej)
    assert any(r.reason.startswith("malformed line: line 8") for r in rej)
    assert any(r.reason.startswith("annotation matches no image") for r in res.qc.flagged)
    back = read_manifest(res.manifest_path)
    assert back.set_index("image_id").loc["1.2.840.1.1", "label"] == 1


def test_dicom_synthetic_annotations_round_trip(tmp_path, write_dicom):
    """The `synth` contract: annotations.csv keyed by sop_instance_uid with lesions JSON."""
    src = tmp_path / "s" / "dicom"
    write_dicom(src / "x.dcm", patient_id="S1", sop="1.2.3.100", study="1.2.3.200")
    les = [{"shape": "circle", "cx": 10, "cy": 12, "r": 4, "pathology": "malignant", "kind": "mass"}]
    pd.DataFrame([{"sop_instance_uid": "1.2.3.100", "label": 1, "outcome": "malignant", "density": "D",
                   "lesions": json.dumps(les)}]).to_csv(tmp_path / "s" / "annotations.csv", index=False)
    res = ingest("dicom", src, tmp_path / "s" / "m.csv", annotations=tmp_path / "s" / "annotations.csv")
    row = res.manifest.iloc[0]
    assert row.label == 1 and row.density == "D" and json.loads(row.lesions) == les
    assert not res.qc.rejected


def test_dicom_ingest_resumes_from_header_cache(tmp_path, write_dicom):
    """An interrupted ingest keeps the headers it read; the next run reuses them."""
    src = tmp_path / "d"
    for i in range(4):
        write_dicom(src / f"{i}.dcm", patient_id=f"P{i}", sop=f"1.2.5.{i}")
    out = tmp_path / "m.csv"
    cache = tmp_path / "m_headers.jsonl"

    def interrupt_after_two(items, total=None, description=""):
        for n, it in enumerate(items):
            if n == 2:
                raise KeyboardInterrupt
            yield it

    with pytest.raises(KeyboardInterrupt):
        ingest("dicom", src, out, track=interrupt_after_two)
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert 0 < len(lines) < 4 and not out.exists()  # headers read before the interruption
    # prove the second run uses the cache: tamper with a cached vendor
    lines[0]["meta"]["manufacturer"] = "CachedVendor"
    cache.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    res = ingest("dicom", src, out)
    assert len(res.manifest) == 4
    assert (res.manifest["manufacturer"] == "CachedVendor").sum() == 1
    assert not cache.exists()  # removed after a successful run


def test_relative_paths_cover_masks(tmp_path, write_dicom):
    src = tmp_path / "c" / "dicom"
    write_dicom(src / "x.dcm", patient_id="S1", sop="1.2.3.300", study="1.2.3.400")
    (tmp_path / "c" / "masks").mkdir()
    (tmp_path / "c" / "masks" / "m.png").write_bytes(b"")
    les = [{"shape": "mask", "path": "masks/m.png", "pathology": "malignant"}]
    pd.DataFrame([{"sop_instance_uid": "1.2.3.300", "label": 1, "lesions": json.dumps(les)}]).to_csv(
        tmp_path / "c" / "ann.csv", index=False)
    res = ingest("dicom", src, tmp_path / "c" / "m.csv", annotations=tmp_path / "c" / "ann.csv", relative_paths=True)
    row = res.manifest.iloc[0]
    assert row.path == "dicom/x.dcm"
    assert json.loads(row.lesions)[0]["path"] == "masks/m.png"


def test_annotation_values_the_schema_refuses_reject_only_that_row(tmp_path, write_dicom):
    src = tmp_path / "d"
    for i in range(3):
        write_dicom(src / f"{i}.dcm", patient_id=f"P{i}", sop=f"1.2.6.{i}")
    pd.DataFrame([
        {"sop_instance_uid": "1.2.6.0", "label": 1, "split": "bogus"},
        {"sop_instance_uid": "1.2.6.1", "label": 0, "split": "train"},
    ]).to_csv(tmp_path / "a.csv", index=False)
    res = ingest("dicom", src, tmp_path / "m.csv", annotations=tmp_path / "a.csv")
    assert sorted(res.manifest["image_id"]) == ["1.2.6.1", "1.2.6.2"]
    assert res.manifest.set_index("image_id").loc["1.2.6.1", "split"] == "train"
    assert any(r.image_id == "1.2.6.0" and r.reason.startswith("invalid value: split") for r in res.qc.rejected)


def test_threaded_header_reading_gives_the_same_manifest(tree, tmp_path):
    one = ingest("dicom", tree, tmp_path / "a.csv")
    many = ingest("dicom", tree, tmp_path / "b.csv", workers=3)
    pd.testing.assert_frame_equal(one.manifest, many.manifest)
    assert [r.reason for r in one.qc] == [r.reason for r in many.qc]
