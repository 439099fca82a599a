"""preprocess_manifest + open_cache: QC rows, resumability, workers, the index, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammolens.data.cache import INDEX_COLUMNS, CacheError, open_cache
from mammolens.data.manifest import REQUIRED_COLUMNS
from mammolens.data.preprocess import PreprocessSettings, preprocess_manifest

cv2 = pytest.importorskip("cv2")

S = PreprocessSettings(size=(64, 48), seg_size=128)


def _breast_png(path: Path, *, chest: str, seed: int, h: int = 200, w: int = 150) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] + 0.5
    img = 0.02 + 0.01 * rng.random((h, w))
    r2 = (xx / (0.6 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2
    img[r2 <= 1] = 0.5 + 0.2 * (1 - r2[r2 <= 1])
    cx, cy, r = 0.3 * w + seed % 7, 0.5 * h + seed % 5, 9.0
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r**2] = 0.85
    img[8:18, int(0.75 * w) : int(0.9 * w)] = 1.0  # a burned-in label
    if chest == "right":
        img = img[:, ::-1]
        cx = w - cx
    cv2.imwrite(str(path), (img * 65535).astype(np.uint16))
    return cx, cy, r


def _manifest(tmp_path: Path, n: int = 6, *, bad: bool = True) -> pd.DataFrame:
    d = tmp_path / "images"
    d.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        lat = "L" if i % 2 == 0 else "R"
        p = d / f"img{i}.png"
        cx, cy, r = _breast_png(p, chest="left" if lat == "L" else "right", seed=i)
        lesions = json.dumps([{"shape": "circle", "cx": cx, "cy": cy, "r": r, "pathology": "malignant"}]) if i % 3 == 0 else ""
        rows.append({"image_id": f"p{i // 2}/img {i}", "patient_id": f"p{i // 2}", "path": str(p), "laterality": lat, "lesions": lesions})
    if bad:
        (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
        cv2.imwrite(str(d / "blank.png"), np.zeros((120, 100), np.uint16))
        rows.append({"image_id": "corrupt", "patient_id": "px", "path": str(d / "corrupt.png"), "laterality": "L", "lesions": ""})
        rows.append({"image_id": "missing", "patient_id": "px", "path": str(d / "nope.png"), "laterality": "L", "lesions": ""})
        rows.append({"image_id": "blank", "patient_id": "px", "path": str(d / "blank.png"), "laterality": "R", "lesions": ""})
    df = pd.DataFrame(rows)
    for c in REQUIRED_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    return df


def test_bad_inputs_become_qc_rows_and_good_ones_finish(tmp_path):
    df = _manifest(tmp_path)
    res = preprocess_manifest(df, tmp_path / "cache", S, progress=False)
    assert res.total == 9 and res.processed == 9 and res.rejected == 3
    qc = pd.read_csv(tmp_path / "cache" / "qc.csv", keep_default_na=False)
    rej = qc[qc["severity"] == "reject"].set_index("image_id")
    assert set(rej.index) == {"corrupt", "missing", "blank"}
    assert "not found" in rej.loc["missing", "reason"]
    assert "blank" in rej.loc["blank", "reason"]
    assert rej.loc["corrupt", "path"].endswith("corrupt.png")
    cache = res.cache
    assert len(cache.image_ids) == 6 and all(cache.has(f"p{i // 2}/img {i}") for i in range(6))
    img, mask, tf = cache.load("p0/img 0")
    assert img.dtype == np.float32 and img.shape == (64, 48) and 0 <= img.min() and img.max() <= 1
    assert mask is not None and mask.dtype == np.uint8 and mask.max() == 2
    # the mask lies on the bright lesion; the label (1.0) is gone
    assert img[mask == 2].mean() > 0.7 and img.max() < 0.95
    assert cache.load("p0/img 1")[1] is None
    # right breasts are flipped: chest wall on the left for all
    for iid in cache.image_ids:
        im = cache.load(iid)[0]
        assert im[:, :5].mean() > im[:, -5:].mean()
    with pytest.raises(CacheError, match="rejected"):
        cache.load("blank")
    with pytest.raises(CacheError, match="not in the cache"):
        cache.load("nobody")
    idx = cache.index
    assert list(idx.columns) == INDEX_COLUMNS and len(idx) == 9
    assert set(idx["status"]) == {"ok", "rejected"}
    assert idx.set_index("image_id").loc["p0/img 0", "has_mask"]


def test_resume_skips_reprocesses_on_change_and_regenerates(tmp_path):
    df = _manifest(tmp_path, n=4, bad=False)
    cdir = tmp_path / "cache"
    r1 = preprocess_manifest(df, cdir, S, progress=False)
    assert (r1.processed, r1.skipped) == (4, 0)
    r2 = preprocess_manifest(df, cdir, S, progress=False)
    assert (r2.processed, r2.skipped) == (0, 4)
    # a deleted array file is regenerated
    victim = cdir / r2.cache.index.set_index("image_id").loc["p1/img 2", "file"]
    victim.unlink()
    r3 = preprocess_manifest(df, cdir, S, progress=False)
    assert (r3.processed, r3.skipped) == (1, 3) and victim.exists()
    # a changed input file (new mtime/size) is reprocessed
    p = Path(df.loc[1, "path"])
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r4 = preprocess_manifest(df, cdir, S, progress=False)
    assert (r4.processed, r4.skipped) == (1, 3)
    # a changed setting reprocesses everything; the cache now has the new settings
    s2 = S.model_copy(update={"size": (32, 24)})
    r5 = preprocess_manifest(df, cdir, s2, progress=False)
    assert (r5.processed, r5.skipped) == (4, 0)
    c = open_cache(cdir)
    assert c.settings == s2 and c.load("p0/img 0")[0].shape == (32, 24)
    assert len(c.index) == 4 and set(c.index["key"]) == {s2.key()}


def test_interrupted_index_is_repaired(tmp_path):
    df = _manifest(tmp_path, n=3, bad=False)
    cdir = tmp_path / "cache"
    preprocess_manifest(df, cdir, S, progress=False)
    index = cdir / "index.csv"
    lines = index.read_text().splitlines(keepends=True)
    # a kill mid-write: the last row is cut in half and one row never got written
    assert len(lines) == 4
    index.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    c = open_cache(cdir)
    assert len(c.image_ids) == 1
    r = preprocess_manifest(df, cdir, S, progress=False)
    assert (r.processed, r.skipped) == (2, 1)
    assert len(r.cache.image_ids) == 3
    assert index.read_text().endswith("\n") and len(index.read_text().splitlines()) == 4


def test_workers_two_equals_one(tmp_path):
    df = _manifest(tmp_path, n=6)
    a = preprocess_manifest(df, tmp_path / "c1", S, workers=1, progress=False)
    b = preprocess_manifest(df, tmp_path / "c2", S, workers=2, progress=False, chunksize=1)
    assert a.cache.image_ids == b.cache.image_ids
    assert a.rejected == b.rejected == 3
    for iid in a.cache.image_ids:
        ia, ma, ta = a.cache.load(iid)
        ib, mb, tb = b.cache.load(iid)
        assert np.array_equal(ia, ib) and ta == tb
        assert (ma is None and mb is None) or np.array_equal(ma, mb)


def test_float16_and_open_cache_errors(tmp_path):
    df = _manifest(tmp_path, n=2, bad=False)
    s = S.model_copy(update={"dtype": "float16"})
    res = preprocess_manifest(df, tmp_path / "c", s, progress=False)
    f = res.cache.path("p0/img 0")
    assert np.load(f).dtype == np.float16
    assert res.cache.load("p0/img 0")[0].dtype == np.float32
    with pytest.raises(CacheError, match="not found"):
        open_cache(tmp_path / "nowhere")
    (tmp_path / "foreign").mkdir()
    with pytest.raises(CacheError, match="not a mammolens cache"):
        open_cache(tmp_path / "foreign")
    # a cache pickles (DataLoader workers)
    import pickle

    c2 = pickle.loads(pickle.dumps(res.cache))
    assert np.array_equal(c2.load("p0/img 0")[0], res.cache.load("p0/img 0")[0])


def test_cli_preprocess(tmp_path):
    from typer.testing import CliRunner

    from mammolens.cli import app

    df = _manifest(tmp_path, n=2)
    mpath = tmp_path / "manifest.csv"
    df.to_csv(mpath, index=False)
    runner = CliRunner()
    r = runner.invoke(app, ["preprocess", str(mpath), "--out", str(tmp_path / "c"), "--size", "64x48", "--json"])
    assert r.exit_code == 3, r.output
    out = json.loads(r.stdout)
    assert out["processed"] == 5 and out["rejected"] == 3 and out["ok"] == 2
    assert out["settings"]["size"] == [64, 48]
    r2 = runner.invoke(app, ["preprocess", str(mpath), "--out", str(tmp_path / "c"), "--size", "64x48", "--json"])
    assert json.loads(r2.stdout)["skipped"] == 5
    r3 = runner.invoke(app, ["preprocess", str(mpath), "--out", str(tmp_path / "c"), "--size", "64"])
    assert r3.exit_code == 2
    good = tmp_path / "good.csv"
    df.iloc[:2].to_csv(good, index=False)
    r4 = runner.invoke(app, ["preprocess", str(good), "--out", str(tmp_path / "c2"), "--size", "64x48"])
    assert r4.exit_code == 0, r4.output
    r5 = runner.invoke(app, ["preprocess", str(tmp_path / "nomanifest.csv"), "--out", str(tmp_path / "c3")])
    assert r5.exit_code == 1 and "Traceback" not in r5.output


def test_real_mini_mias_manifest(tmp_path, mias_dir):
    ids = [1, 2, 3, 4]
    df = pd.DataFrame(
        {
            "image_id": [f"mdb{i:03d}" for i in ids],
            "patient_id": [f"w{(i + 1) // 2}" for i in ids],
            "path": [str(mias_dir / f"mdb{i:03d}.pgm") for i in ids],
            "laterality": ["R" if i % 2 else "L" for i in ids],
        }
    )
    for c in REQUIRED_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    res = preprocess_manifest(df, tmp_path / "c", PreprocessSettings(size=(256, 128)), progress=False)
    assert res.rejected == 0 and res.flagged == 0 and len(res.cache.image_ids) == 4
    for iid in res.cache.image_ids:
        img, _, tf = res.cache.load(iid)
        assert tf.flipped == (int(iid[3:]) % 2 == 1)
        assert img[:, :16].mean() > img[:, -16:].mean()


_KILL_SCRIPT = r"""
import os, signal, sys
import pandas as pd
from mammolens.data.preprocess import PreprocessSettings, preprocess_manifest

def main():
    df = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
    def progress(done, total):
        if done >= 3:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill mid-run
    preprocess_manifest(df, sys.argv[2], PreprocessSettings(size=(64, 48), seg_size=128), progress=progress)

if __name__ == "__main__":
    main()
"""


def test_killed_run_resumes(tmp_path):
    import subprocess
    import sys

    df = _manifest(tmp_path, n=6, bad=False)
    mpath = tmp_path / "m.csv"
    df.to_csv(mpath, index=False)
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    cdir = tmp_path / "cache"
    proc = subprocess.run([sys.executable, str(script), str(mpath), str(cdir)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    c = open_cache(cdir)
    assert len(c.image_ids) == 3
    r = preprocess_manifest(df, cdir, S, progress=False)
    assert (r.processed, r.skipped) == (3, 3) and len(r.cache.image_ids) == 6


def test_relative_mask_lesions_resolve_against_the_manifest_folder(tmp_path):
    df = _manifest(tmp_path, n=2, bad=False)
    img = cv2.imread(df.loc[0, "path"], cv2.IMREAD_UNCHANGED)
    m = np.zeros(img.shape, np.uint8)
    m[90:110, 40:60] = 255
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks" / "m0.png"), m)
    df.loc[0, "lesions"] = json.dumps([{"shape": "mask", "path": "masks/m0.png", "pathology": "malignant"}])
    mpath = tmp_path / "manifest.csv"
    df.to_csv(mpath, index=False)
    res = preprocess_manifest(mpath, tmp_path / "c", S, progress=False)
    assert res.flagged == 0 and res.rejected == 0
    _, mask, tf = res.cache.load("p0/img 0")
    assert mask is not None and mask.max() == 2
    ys, xs = np.nonzero(mask == 2)
    cx, cy = tf.forward_points(np.array([[50.0, 100.0]]))[0]
    assert abs(xs.mean() + 0.5 - cx) < 1.0 and abs(ys.mean() + 0.5 - cy) < 1.0
    # a mask file that exists nowhere: the image is kept, flagged, without a mask
    df.loc[0, "lesions"] = json.dumps([{"shape": "mask", "path": "masks/nope.png", "pathology": "malignant"}])
    res2 = preprocess_manifest(df, tmp_path / "c2", S, progress=False, base_dir=tmp_path)
    assert res2.rejected == 0 and res2.flagged == 1
    assert res2.cache.load("p0/img 0")[1] is None
    assert "lesions_unreadable" in res2.qc.flagged[0].reason


def test_one_writer_per_cache(tmp_path):
    pytest.importorskip("fcntl")
    from mammolens.data.cache import CacheLock as _CacheLock
    from mammolens.errors import MammolensError

    df = _manifest(tmp_path, n=1, bad=False)
    cdir = tmp_path / "c"
    cdir.mkdir()
    held = _CacheLock(cdir)
    with pytest.raises(MammolensError, match="another"):
        preprocess_manifest(df, cdir, S, progress=False)
    assert not (cdir / "settings.json").exists()
    held.release()
    assert preprocess_manifest(df, cdir, S, progress=False).processed == 1
