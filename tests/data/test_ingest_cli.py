"""``mammolens ingest`` and ``mammolens split`` through the CLI (typer CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mammolens.cli import app
from mammolens.data.adapters import ADAPTERS, get_adapter
from mammolens.data.ingest import ingest, qc_path_for
from mammolens.data.manifest import read_manifest
from mammolens.errors import ConfigError
from mammolens.qc import QCTable

runner = CliRunner()


def _mias(root: Path, lines: list[str], refs: list[str]) -> Path:
    root.mkdir(parents=True)
    (root / "Info.txt").write_text("header text\n\n" + "\n".join(lines) + "\n")
    for r in refs:
        (root / f"{r}.pgm").write_bytes(b"P5\n16 16\n255\n" + np.zeros(256, np.uint8).tobytes())
    return root


@pytest.fixture
def good(tmp_path):
    lines, refs = [], []
    for n in range(1, 21):
        ref = f"mdb{n:03d}"
        refs.append(ref)
        lines.append(f"{ref} F CIRC M 5 5 2" if n % 4 == 1 else f"{ref} G NORM")
    return _mias(tmp_path / "good", lines, refs)


def test_ingest_cli_ok_and_json(good, tmp_path):
    out = tmp_path / "m.csv"
    r = runner.invoke(app, ["ingest", "mias", str(good), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["images"], s["patients"], s["exams"], s["malignant"], s["normal"], s["rejected"]) == (20, 10, 10, 5, 15, 0)
    assert (s["breasts"], s["positive_breasts"], s["positive_exams"]) == (20, 5, 5)
    assert s["manifest"] == str(out) and Path(s["qc_table"]) == qc_path_for(out)
    assert len(read_manifest(out)) == 20
    r2 = runner.invoke(app, ["ingest", "mias", str(good), "-o", str(tmp_path / "m2.parquet")])
    assert r2.exit_code == 0 and "images" in r2.output
    assert len(read_manifest(tmp_path / "m2.parquet")) == 20


def test_ingest_cli_exit_3_on_rejections(tmp_path):
    src = _mias(tmp_path / "bad", ["mdb001 F NORM", "mdb002 F NORM", "mdb003 F ZZZZ", "mdb004 F NORM"], ["mdb001", "mdb002", "mdb003"])
    out = tmp_path / "m.csv"
    r = runner.invoke(app, ["ingest", "mias", str(src), "-o", str(out), "--json"])
    assert r.exit_code == 3, r.output
    s = json.loads(r.stdout)
    assert s["images"] == 2 and s["rejected"] == 3
    assert set(s["rejected_by_reason"]) == {"malformed Info.txt line", "incomplete truth", "file missing"}
    qc = QCTable.read_csv(qc_path_for(out))
    assert len(qc.rejected) == 3


def test_ingest_cli_nothing_ingested_is_an_error(tmp_path):
    src = _mias(tmp_path / "none", ["mdb001 X NORM", "mdb002 F NORM"], ["mdb001"])
    r = runner.invoke(app, ["ingest", "mias", str(src), "-o", str(tmp_path / "m.csv")])
    assert r.exit_code == 1 and "no image could be ingested" in r.output


def test_ingest_cli_usage_errors(good, tmp_path):
    r = runner.invoke(app, ["ingest", "nosuch", str(good), "-o", str(tmp_path / "m.csv")])
    assert r.exit_code == 2 and "unknown dataset format" in r.output
    r = runner.invoke(app, ["ingest", "mias", str(good), "-o", str(tmp_path / "m.csv"), "--map", "a=b"])
    assert r.exit_code == 2 and "--map" in r.output
    r = runner.invoke(app, ["ingest", "mias", str(tmp_path / "absent"), "-o", str(tmp_path / "m.csv")])
    assert r.exit_code == 1 and "not found" in r.output
    r = runner.invoke(app, ["ingest", "inbreast", str(good / "Info.txt"), "-o", str(tmp_path / "m.csv")])
    assert r.exit_code == 1 and "expects the dataset's folder" in r.output
    r = runner.invoke(app, ["ingest", "csv", str(good), "-o", str(tmp_path / "m.csv")])
    assert r.exit_code == 1 and "expects a table file" in r.output
    r = runner.invoke(app, ["ingest", "mias", str(good), "-o", str(tmp_path / "m.txt")])
    assert r.exit_code == 2 and ".csv or .parquet" in r.output
    assert runner.invoke(app, ["ingest", "--help"]).exit_code == 0


def test_ingest_relative_paths(good, tmp_path):
    res = ingest("mias", good, tmp_path / "sub" / "m.csv", relative_paths=True)
    assert not Path(res.manifest["path"].iloc[0]).is_absolute()
    back = read_manifest(tmp_path / "sub" / "m.csv")
    assert Path(back["path"].iloc[0]).exists()


def test_registry():
    assert set(ADAPTERS) == {"dicom", "mias", "cbis-ddsm", "vindr", "rsna", "inbreast", "cmmd", "embed", "csv"}
    for name in ADAPTERS:
        a = get_adapter(name)
        assert a.doc.strip() and a.summary and callable(a.load)
    assert get_adapter("CBIS_DDSM").name == "cbis-ddsm"
    assert "annotations" in get_adapter("dicom").options
    with pytest.raises(ConfigError):
        get_adapter("nope")


def test_split_cli(good, tmp_path):
    m = tmp_path / "m.csv"
    ingest("mias", good, m)
    r = runner.invoke(app, ["split", str(m), "--val", "0.2", "--test", "0.2", "--seed", "1", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert [x["split"] for x in s["splits"]] == ["train", "val", "test"]
    assert [x["patients"] for x in s["splits"]] == [6, 2, 2]
    df = read_manifest(m, resolve_paths=False)
    assert df.groupby("patient_id")["split"].nunique().max() == 1
    assert df["path"].iloc[0] == str((good / "mdb001.pgm").resolve())  # paths untouched
    again = tmp_path / "again.csv"
    assert runner.invoke(app, ["split", str(m), "--val", "0.2", "--test", "0.2", "--seed", "1", "-o", str(again)]).exit_code == 0
    assert read_manifest(again)["split"].tolist() == df["split"].tolist()
    r = runner.invoke(app, ["split", str(m), "--folds", "5", "-o", str(tmp_path / "f.csv"), "--json"])
    assert r.exit_code == 0
    f = pd.read_csv(tmp_path / "f.csv")
    assert sorted(f["fold"].unique()) == [0, 1, 2, 3, 4]
    r = runner.invoke(app, ["split", str(m), "--folds", "2", "--test", "0.2", "-o", str(tmp_path / "ft.csv"), "--json"])
    assert r.exit_code == 0, r.output
    ft = read_manifest(tmp_path / "ft.csv")
    assert set(ft["split"]) == {"train", "test"} and (ft.loc[ft["split"] == "test", "fold"] == "").all()
    r = runner.invoke(app, ["split", str(m), "--folds", "2", "--val", "0.2"])
    assert r.exit_code == 2 and "--val does not apply" in r.output
    r = runner.invoke(app, ["split", str(m), "--val", "0.6", "--test", "0.6"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["split", str(m), "--stratify-by", "nosuch"])
    assert r.exit_code == 2


def test_split_cli_warns_single_class(tmp_path):
    src = _mias(tmp_path / "neg", [f"mdb{n:03d} F NORM" for n in range(1, 11)], [f"mdb{n:03d}" for n in range(1, 11)])
    m = tmp_path / "m.csv"
    ingest("mias", src, m)
    r = runner.invoke(app, ["split", str(m)])
    assert r.exit_code == 0 and "single class" in r.output


def test_finalize_mixed_extra_columns_write_to_parquet(tmp_path):
    from mammolens.data.ingest import finalize
    from mammolens.data.manifest import write_manifest

    df = pd.DataFrame([{"image_id": "a", "patient_id": "p", "path": "x", "extra": 1},
                       {"image_id": "b", "patient_id": "p", "path": "y", "extra": "t"},
                       {"image_id": "a", "patient_id": "p", "path": "z"},  # duplicate id
                       {"image_id": "c", "patient_id": "q", "path": "w", "laterality": "Z"}])  # invalid value
    qc = QCTable()
    d = finalize(df, qc, dataset="t")
    assert list(d["image_id"]) == ["a", "b"] and list(d["extra"]) == ["1", "t"]
    assert sorted(r.reason.split(":")[0] for r in qc.rejected) == ["duplicate image_id", "invalid value"]
    write_manifest(d, tmp_path / "m.parquet")
    assert list(pd.read_parquet(tmp_path / "m.parquet")["dataset"]) == ["t", "t"]
