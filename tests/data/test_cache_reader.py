"""open_cache / Cache: the reader training's DataLoader workers call in their hot loop."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from mammolens.data.cache import CacheError, open_cache
from mammolens.data.manifest import REQUIRED_COLUMNS
from mammolens.data.preprocess import PreprocessSettings, preprocess_manifest
from mammolens.data.transform import Transform

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache_src")
    rows = []
    for i in range(4):
        h, w = 160, 120
        yy, xx = np.mgrid[:h, :w] + 0.5
        img = np.full((h, w), 0.02)
        r2 = (xx / (0.6 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2
        img[r2 <= 1] = 0.5 + 0.3 * (1 - r2[r2 <= 1])
        p = tmp / f"i{i}.png"
        cv2.imwrite(str(p), (img * 65535).astype(np.uint16))
        les = json.dumps([{"shape": "box", "x0": 20, "y0": 70, "x1": 40, "y1": 90, "pathology": "benign"}]) if i == 0 else ""
        rows.append({"image_id": f"img{i}", "patient_id": f"p{i}", "path": str(p), "laterality": "L", "lesions": les})
    df = pd.DataFrame(rows)
    for c in REQUIRED_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    out = tmp / "cache"
    res = preprocess_manifest(df, out, PreprocessSettings(size=(64, 32), seg_size=128), progress=False)
    assert res.rejected == 0
    return out


def test_open_cache_attributes(cache_dir):
    c = open_cache(cache_dir)
    assert c.settings.size == (64, 32) and len(c.key) == 12
    assert c.image_ids == ["img0", "img1", "img2", "img3"]
    assert c.has("img2") and "img2" in c and not c.has("zzz") and len(c) == 4
    idx = c.index
    assert isinstance(idx, pd.DataFrame) and idx["has_mask"].tolist() == [True, False, False, False]
    assert isinstance(c.transform("img0"), Transform)
    assert "images=4" in repr(c)


def test_load_values_and_mask(cache_dir):
    c = open_cache(cache_dir)
    img, mask, tf = c.load("img0")
    assert img.shape == (64, 32) and img.dtype == np.float32
    assert mask is not None and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    # the box lands where the transform says it does
    ys, xs = np.nonzero(mask)
    cx, cy = tf.forward_points(np.array([[30.0, 80.0]]))[0]
    assert abs(xs.mean() + 0.5 - cx) < 1.0 and abs(ys.mean() + 0.5 - cy) < 1.0


def test_load_is_fast_and_pandas_free(cache_dir):
    c = open_cache(cache_dir)
    c.load("img1")
    t = time.perf_counter()
    for _ in range(50):
        for iid in c.image_ids:
            c.load(iid)
    per = (time.perf_counter() - t) / 200
    assert per < 0.01, f"{per * 1000:.2f} ms per load"
    assert c._index is None  # the DataFrame was never built


def test_missing_array_gives_clear_error(cache_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cache_dir, copy)
    c = open_cache(copy)
    c.path("img3").unlink()
    with pytest.raises(CacheError, match="regenerate"):
        c.load("img3")


def test_foreign_settings_file(tmp_path):
    (tmp_path / "settings.json").write_text('{"settings": {"size": "nonsense"}}')
    with pytest.raises(CacheError, match="not a mammolens cache"):
        open_cache(tmp_path)
    (tmp_path / "settings.json").write_text(
        json.dumps({"settings": PreprocessSettings().model_dump(mode="json")})
    )
    (tmp_path / "index.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(CacheError, match="not a mammolens cache index"):
        open_cache(tmp_path)
