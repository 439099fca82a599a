"""benign_labels(): the benign target of the optional benign output, from outcome and lesions."""

from __future__ import annotations

import json

import pandas as pd

from mammolens.data.manifest import benign_labels


def test_benign_from_outcome_and_lesion_pathology():
    ben = json.dumps([{"shape": "circle", "cx": 5, "cy": 5, "r": 2, "pathology": "benign"}])
    mal = json.dumps([{"shape": "circle", "cx": 5, "cy": 5, "r": 2, "pathology": "malignant"}])
    both = json.dumps([json.loads(mal)[0], json.loads(ben)[0]])
    df = pd.DataFrame({
        "outcome": ["benign", "normal", "malignant", "malignant", "", "", "Benign"],
        "lesions": ["", "", mal, both, ben, "", "not json"],
    })
    got = benign_labels(df)
    assert str(got.dtype) == "Int64"
    # a malignant image with a benign finding too is benign-positive (independent targets)
    assert got.fillna(-1).tolist() == [1, 0, 0, 1, 1, -1, 1]


def test_without_outcome_or_lesions_nothing_is_known():
    df = pd.DataFrame({"image_id": ["a", "b"], "label": [1, 0]})
    assert benign_labels(df).isna().all()
