import json

import numpy as np
import pytest

from mammolens.data.lesions import (
    MASK_BENIGN,
    MASK_MALIGNANT,
    Lesion,
    dump_lesions,
    parse_lesions,
    rasterize_lesions,
)
from mammolens.data.transform import Transform


def test_parse_and_dump_round_trip():
    s = json.dumps(
        [
            {"shape": "circle", "cx": 50, "cy": 40, "r": 10, "pathology": "Malignant", "kind": "mass", "source": "SPIC"},
            {"shape": "box", "x0": 1, "y0": 2, "x1": 5, "y1": 9},
            {"shape": "polygon", "points": [[0, 0], [4, 0], [4, 4]], "pathology": "benign"},
            {"shape": "point", "x": 3, "y": 4},
        ]
    )
    les = parse_lesions(s)
    assert [le.shape for le in les] == ["circle", "box", "polygon", "point"]
    assert les[0].pathology == "malignant" and les[0].extra == {"source": "SPIC"}
    assert les[1].pathology == "unknown"
    assert parse_lesions(dump_lesions(les))[0].to_dict() == les[0].to_dict()
    assert parse_lesions("") == [] and dump_lesions([]) == ""
    assert les[1].center() == (3.0, 5.5)


@pytest.mark.parametrize(
    "bad",
    ['[{"shape": "hexagon"}]', '[{"shape": "circle", "cx": 1}]', '[{"shape": "point", "x": 1, "y": 1, "pathology": "odd"}]', '{"a": 1}'],
)
def test_parse_rejects_bad_items(bad):
    with pytest.raises(ValueError):
        parse_lesions(bad)


def test_rasterize_original_geometry():
    les = [
        Lesion("circle", {"cx": 20, "cy": 30, "r": 5}, "malignant"),
        Lesion("box", {"x0": 50, "y0": 10, "x1": 60, "y1": 20}, "benign"),
    ]
    m = rasterize_lesions(les, (64, 80))
    assert m[30, 20] == MASK_MALIGNANT and m[15, 55] == MASK_BENIGN and m[0, 0] == 0
    area = (m == MASK_MALIGNANT).sum()
    assert abs(area - np.pi * 25) < 12
    assert (m == MASK_BENIGN).sum() == pytest.approx(100, abs=22)


def test_rasterize_with_transform_matches_warped_mask():
    tf = Transform(200, 100, 0, 200, 20, 100, True, 0.5, 100, 50)
    le = [Lesion("circle", {"cx": 60, "cy": 100, "r": 12}, "malignant")]
    direct = rasterize_lesions(le, (100, 50), transform=tf) == MASK_MALIGNANT
    warped = tf.forward_array((rasterize_lesions(le, (200, 100)) == MASK_MALIGNANT).astype(np.float32)) >= 0.5
    inter = (direct & warped).sum()
    union = (direct | warped).sum()
    assert union > 0 and inter / union > 0.8


def test_rebase_mask_paths_one_owner(tmp_path):
    import json

    from mammolens.data.lesions import rebase_mask_paths, relative_path

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "m.png").write_bytes(b"x")
    cell = json.dumps([{"shape": "mask", "path": "m.png", "pathology": "malignant"},
                       {"shape": "circle", "cx": 1, "cy": 2, "r": 3}])
    # relative -> absolute against the first folder, or the first holding the file
    a = json.loads(rebase_mask_paths(cell, folders=[tmp_path / "a", tmp_path / "b"]))
    assert a[0]["path"] == str(tmp_path / "a" / "m.png") and a[1] == {"shape": "circle", "cx": 1, "cy": 2, "r": 3}
    b = json.loads(rebase_mask_paths(cell, folders=[tmp_path / "a", tmp_path / "b"], must_exist=True))
    assert b[0]["path"] == str(tmp_path / "b" / "m.png")
    assert json.loads(rebase_mask_paths(cell, folders=[tmp_path / "a"], must_exist=True))[0]["path"] == "m.png"
    # absolute -> relative (POSIX), and the list form is edited in place
    items = json.loads(rebase_mask_paths(cell, folders=[tmp_path / "b"]))
    assert rebase_mask_paths(items, relative_to=tmp_path)[0]["path"] == "b/m.png"
    # cells without masks, empty or broken come back as they were
    for c in ("", "[]", "not json", '{"shape": "mask"}', json.dumps([{"shape": "box", "x0": 0, "y0": 0, "x1": 1, "y1": 1}])):
        assert rebase_mask_paths(c, folders=[tmp_path]) == c
    assert relative_path("https://x/y.png", tmp_path) == "https://x/y.png"
