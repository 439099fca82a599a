"""EMBED adapter: the documented tables (metadata one row per file, clinical one row per
finding), the join on patient + exam + side, and the pathology / BI-RADS label definition."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mammolens.data.ingest import ingest

NAS = "/mnt/NAS2/mammo/anon_dicom"
META_COLS = ["empi_anon", "acc_anon", "anon_dicom_path", "study_date_anon", "StudyDescription", "SeriesDescription",
             "FinalImageType", "ImageLateralityFinal", "ViewPosition", "spot_mag", "num_roi", "ROI_coords", "match_level",
             "Manufacturer", "ManufacturerModelName"]
CLIN_COLS = ["empi_anon", "acc_anon", "study_date_anon", "desc", "tissueden", "asses", "numfind", "side", "bside",
             "path_severity", "path1", "age_at_study", "RACE_DESC"]


def make_embed(root: Path, write_dicom) -> Path:
    meta: list[dict] = []
    n = [0]

    def image(pid: int, acc: int, lat: str, view: str, *, kind: str = "2D", spot: str = "0", roi: str = "",
              write: bool = True, corrupt: bool = False) -> None:
        n[0] += 1
        sop = f"1.2.840.777.{n[0]}"
        rel = f"cohort_1/{pid}/{acc}/{sop}.dcm"
        f = root / "images" / rel
        if write:
            write_dicom(f, patient_id=str(pid), laterality=lat, view=view, sop=sop, study=f"1.2.840.888.{acc}",
                        manufacturer="HOLOGIC, Inc.")
            if corrupt:
                f.write_bytes(f.read_bytes()[:100])
        meta.append({"empi_anon": pid, "acc_anon": acc, "anon_dicom_path": f"{NAS}/{rel}", "study_date_anon": "2015-01-02",
                     "StudyDescription": "MG Screening Bilateral", "SeriesDescription": f"{lat} {view}",
                     "FinalImageType": kind, "ImageLateralityFinal": lat, "ViewPosition": view, "spot_mag": spot,
                     "num_roi": 1 if roi else 0, "ROI_coords": roi, "match_level": "[1]" if roi else "",
                     "Manufacturer": "HOLOGIC, Inc.", "ManufacturerModelName": "Selenia Dimensions"})

    def four(pid: int, acc: int, **kw) -> None:
        for lat in ("L", "R"):
            for view in ("CC", "MLO"):
                image(pid, acc, lat, view, **kw)

    four(1001, 5001)                                   # negative screening
    image(1001, 5001, "L", "CC", kind="C-view")        # left out
    four(1002, 5002)                                   # screening recall of the left breast
    image(1002, 5003, "L", "CC", roi="[[10, 5, 30, 25]]")   # diagnostic, biopsy: invasive cancer
    image(1002, 5003, "L", "MLO")
    image(1002, 5003, "L", "CC", spot="1")             # spot view: left out
    four(1003, 5004)                                   # right benign biopsy
    four(1004, 5005)                                   # bilateral finding, DCIS on the left
    four(1005, 5006)                                   # exam with no clinical rows
    image(1006, 5007, "L", "CC", write=False)          # file missing
    image(1006, 5007, "X", "CC")                       # bad laterality
    image(1006, 5007, "R", "CC", corrupt=True)         # unreadable DICOM
    clin = [
        {"empi_anon": 1001, "acc_anon": 5001, "desc": "MG Screening Bilateral", "tissueden": 2, "asses": "N", "numfind": 1,
         "side": "", "bside": "", "path_severity": "", "age_at_study": 55},
        {"empi_anon": 1002, "acc_anon": 5002, "desc": "MG Screening Bilateral", "tissueden": 3, "asses": "A", "numfind": 1,
         "side": "L", "bside": "", "path_severity": "", "age_at_study": 61},
        {"empi_anon": 1002, "acc_anon": 5002, "desc": "MG Screening Bilateral", "tissueden": 3, "asses": "N", "numfind": 2,
         "side": "R", "bside": "", "path_severity": "", "age_at_study": 61},
        {"empi_anon": 1002, "acc_anon": 5003, "desc": "MG Diagnostic Left", "tissueden": 3, "asses": "S", "numfind": 1,
         "side": "L", "bside": "L", "path_severity": "0", "path1": "ID", "age_at_study": 61},
        {"empi_anon": 1003, "acc_anon": 5004, "desc": "MG Diagnostic Bilateral", "tissueden": 1, "asses": "S", "numfind": 1,
         "side": "R", "bside": "R", "path_severity": "4", "age_at_study": 47},
        {"empi_anon": 1003, "acc_anon": 5004, "desc": "MG Diagnostic Bilateral", "tissueden": 1, "asses": "B", "numfind": 2,
         "side": "L", "bside": "", "path_severity": "", "age_at_study": 47},
        {"empi_anon": 1004, "acc_anon": 5005, "desc": "MG Diagnostic Bilateral", "tissueden": 4, "asses": "M", "numfind": 1,
         "side": "B", "bside": "L", "path_severity": "1", "path1": "DC", "age_at_study": 70},
        {"empi_anon": 1006, "acc_anon": 5007, "desc": "MG Screening Bilateral", "tissueden": 2, "asses": "N", "numfind": 1,
         "side": "", "bside": "", "path_severity": "", "age_at_study": 50},
    ]
    (root / "tables").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(meta, columns=META_COLS).to_csv(root / "tables" / "EMBED_OpenData_metadata.csv", index=False)
    pd.DataFrame(clin, columns=CLIN_COLS).to_csv(root / "tables" / "EMBED_OpenData_clinical.csv", index=False,
                                                 quoting=csv.QUOTE_MINIMAL)
    with (root / "tables" / "EMBED_OpenData_clinical.csv").open("a") as fh:
        fh.write("1007,5008,broken line\n")  # malformed: rejected, the rest goes on
    return root


@pytest.fixture
def embed(tmp_path: Path, write_dicom) -> Path:
    return make_embed(tmp_path / "EMBED", write_dicom)


def test_embed_labels_follow_the_definition(embed: Path, tmp_path: Path) -> None:
    res = ingest("embed", embed, tmp_path / "m.csv")
    df = res.manifest
    by = {(r.study_id, r.laterality, r.view): r for r in df.itertuples(index=False)}
    # negative screening: BI-RADS 1, no pathology -> 0 normal
    assert all(by[("5001", lat, v)].label == 0 and by[("5001", lat, v)].outcome == "normal" for lat in "LR" for v in ("CC", "MLO"))
    # screening recall (BI-RADS 0) of the left breast without pathology -> unknown; right BI-RADS 1 -> 0
    assert pd.isna(by[("5002", "L", "CC")].label) and by[("5002", "R", "MLO")].label == 0
    # diagnostic exam, invasive cancer on the left
    m = by[("5003", "L", "CC")]
    assert m.label == 1 and m.outcome == "malignant" and m.cancer_type == "invasive" and str(m.path_severity) == "0"
    les = json.loads(m.lesions)
    assert les == [{"shape": "box", "x0": 5.0, "y0": 10.0, "x1": 25.0, "y1": 30.0, "pathology": "malignant",
                    "kind": "roi", "source": "EMBED ROI"}]
    # benign biopsy on the right; the left breast BI-RADS 2 -> normal
    assert by[("5004", "R", "CC")].label == 0 and by[("5004", "R", "CC")].outcome == "benign"
    assert by[("5004", "L", "CC")].outcome == "normal"
    # bilateral finding (side B), DCIS by bside L: left malignant in situ; right BI-RADS 5 unresolved -> unknown
    assert by[("5005", "L", "MLO")].label == 1 and by[("5005", "L", "MLO")].cancer_type == "in situ"
    assert pd.isna(by[("5005", "R", "CC")].label) and str(by[("5005", "R", "CC")].birads) == "5"
    # an exam without clinical rows: unknown
    assert pd.isna(by[("5006", "L", "CC")].label)
    # ids, covariates, only 2D FFDM
    assert set(df["patient_id"]) == {"1001", "1002", "1003", "1004", "1005"}
    assert by[("5001", "L", "CC")].density == "B" and by[("5005", "L", "CC")].density == "D"
    assert by[("5001", "L", "CC")].age == 55 and by[("5001", "L", "CC")].exam_type == "screening"
    assert by[("5001", "L", "CC")].manufacturer == "Hologic" and by[("5001", "L", "CC")].dataset == "embed"
    assert len(df) == 4 + 4 + 2 + 4 + 4 + 4  # C-view, spot view and the 3 bad rows are not in


def test_embed_qc(embed: Path, tmp_path: Path) -> None:
    res = ingest("embed", embed, tmp_path / "m.csv")
    qc = res.qc.to_frame()
    rej = " | ".join(qc.loc[qc["severity"] == "reject", "reason"])
    flags = " | ".join(qc.loc[qc["severity"] == "flag", "reason"])
    assert "file missing: line" in rej and "cohort_1/1006/5007/" in rej
    assert "laterality 'X'" in rej
    assert "unreadable DICOM" in rej
    assert "malformed line" in rej  # the broken clinical line
    assert "not 2D FFDM: 1 image(s) left out (FinalImageType C-view)" in flags
    assert "not 2D FFDM: 1 image(s) left out (spot compression / magnification view)" in flags
    assert "exam without clinical rows: empi_anon 1005, acc_anon 5006" in flags
    assert "label unknown: BI-RADS 0 without a pathology result" in flags
    s = res.summary()
    assert s["positive_breasts"] == 2 and s["label_unknown"] == 2 + 2 + 4


def test_embed_files_found_under_source_without_the_nas_prefix(embed: Path, tmp_path: Path) -> None:
    """The tables' absolute paths point at Emory's NAS: files are found under SOURCE."""
    res = ingest("embed", embed, tmp_path / "m.csv", read_headers=False)
    assert all(Path(p).is_file() and str(embed) in p for p in res.manifest["path"])
    assert (res.manifest["manufacturer"] == "Hologic").all()  # from the metadata table


def test_cli_ingest_embed(embed: Path, tmp_path: Path) -> None:
    from mammolens.cli import app

    r = CliRunner().invoke(app, ["ingest", "embed", str(embed), "-o", str(tmp_path / "m.parquet"), "--json"],
                           env={"COLUMNS": "300"})
    assert r.exit_code == 3, r.output
    s = json.loads(r.stdout[r.stdout.index("{"):])
    assert s["format"] == "embed" and s["images"] == 22 and s["malignant"] == 4
