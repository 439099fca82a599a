import json

import pandas as pd
import pytest

from mammolens.data.manifest import (
    REQUIRED_COLUMNS,
    check_no_leakage,
    manifest_hash,
    read_manifest,
    subset_split,
    validate_manifest,
    write_manifest,
)
from mammolens.errors import LeakageError, ManifestError


def _rows(n=4):
    return pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "study_id": [f"s{i // 2}" for i in range(n)],
            "path": [f"images/img{i}.png" for i in range(n)],
            "laterality": ["l", "R"] * (n // 2),
            "view": ["cc", "MLO"] * (n // 2),
            "manufacturer": ["Hologic"] * n,
            "age": [55, "", 61.5, None][:n],
            "density": ["a", "B", "", "D"][:n],
            "label": [1, 0, "", "0"][:n],
            "lesions": [json.dumps([{"shape": "circle", "cx": 1, "cy": 2, "r": 3}]), "", "", "[]"][:n],
            "split": ["train", "train", "TEST", ""][:n],
        }
    )


def test_validate_normalises_values():
    df = validate_manifest(_rows())
    assert list(df["laterality"]) == ["L", "R", "L", "R"]
    assert list(df["view"]) == ["CC", "MLO", "CC", "MLO"]
    assert list(df["density"]) == ["A", "B", "", "D"]
    assert str(df["label"].dtype) == "Int64"
    assert df["label"].isna().tolist() == [False, False, True, False]
    assert df["age"].isna().tolist() == [False, True, False, True]
    assert list(df["split"]) == ["train", "train", "test", ""]


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("laterality", "X", "laterality"),
        ("density", "E", "density"),
        ("split", "holdout", "split"),
        ("lesions", "{not json", "lesions"),
        ("age", 200, "age"),
        ("label", 7, "label"),
    ],
)
def test_validate_rejects_bad_values(column, value, message):
    df = _rows()
    df.loc[1, column] = value
    with pytest.raises(ManifestError, match=message):
        validate_manifest(df)


def test_missing_column_and_duplicates_are_reported():
    with pytest.raises(ManifestError, match="missing required column"):
        validate_manifest(_rows().drop(columns=["laterality"]))
    df = _rows()
    df.loc[1, "image_id"] = "img0"
    with pytest.raises(ManifestError, match="duplicate image_id"):
        validate_manifest(df)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_resolves_relative_paths(tmp_path, suffix):
    p = write_manifest(_rows(), tmp_path / f"m{suffix}")
    df = read_manifest(p)
    assert df["path"].iloc[0] == str(tmp_path.resolve() / "images/img0.png")
    assert df["label"].tolist()[:2] == [1, 0]
    assert list(df.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert manifest_hash(read_manifest(p, resolve_paths=False)) == manifest_hash(validate_manifest(_rows()))


def test_read_reports_file_in_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,patient_id\nx,y\n")
    with pytest.raises(ManifestError, match="bad.csv"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "absent.csv")


def test_hash_ignores_row_order_but_not_content():
    a = validate_manifest(_rows())
    assert manifest_hash(a) == manifest_hash(a.iloc[::-1])
    b = a.copy()
    b.loc[0, "label"] = 0
    assert manifest_hash(a) != manifest_hash(b)


def test_leakage_check():
    df = validate_manifest(_rows())
    check_no_leakage(df)  # p0 train/train, p1 test/'' -> fine
    df.loc[1, "split"] = "val"
    with pytest.raises(LeakageError, match="p0"):
        check_no_leakage(df)


def test_subset_split_empty_is_clear():
    df = validate_manifest(_rows())
    assert len(subset_split(df, "train")) == 2
    with pytest.raises(ManifestError, match="'val' is empty"):
        subset_split(df, "val")
