"""``mammolens pretrain-ssl`` / pretrain_ssl_from_cache on a tiny toy cohort (seconds)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

import mammolens.train.ssl_pretrain as sp  # noqa: E402
from mammolens.cli import app  # noqa: E402
from mammolens.data.cache import Cache  # noqa: E402
from mammolens.data.manifest import manifest_hash, read_manifest, write_manifest  # noqa: E402
from mammolens.errors import EXIT_ERROR, EXIT_REJECTED, ConfigError  # noqa: E402
from mammolens.testing.toydata import make_toy_cache, make_toy_cohort  # noqa: E402
from mammolens.train.ssl_stage import pretrain_ssl_from_cache  # noqa: E402

FAST = ["--arch", "tiny", "--tiny-width", "4", "--patch-size", "24", "--per-image", "2",
        "--epochs", "1", "--batch-size", "8", "--device", "cpu"]
LIB_FAST = {"arch": "tiny", "tiny_width": 4, "patch_size": 24, "per_image": 2, "epochs": 1,
            "batch_size": 8, "device": "cpu", "max_steps": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy cohort (labels of both kinds in train); one training image not cached."""
    d = tmp_path_factory.mktemp("sslstage")
    make_toy_cohort(d, n_patients=6, size=(80, 64), mask_fraction=0.0, seed=5)
    df = read_manifest(d / "manifest.csv", resolve_paths=False)
    train = df[df["split"] == "train"]
    assert len(train) >= 3 and train["label"].nunique() == 2 and (df["split"] != "train").any()
    uncached = train["image_id"].iloc[0]
    write_manifest(df[df["image_id"] != uncached], d / "cached.csv")
    make_toy_cache(d / "cached.csv", d / "cache", size=(64, 52))
    return {"dir": d, "manifest": d / "manifest.csv", "cache": d / "cache", "df": df, "uncached": uncached}


@pytest.fixture(scope="module")
def cli_run(toy):
    out = toy["dir"] / "w" / "ssl_tiny.pt"
    r = CliRunner().invoke(app, ["pretrain-ssl", str(toy["manifest"]), "--cache", str(toy["cache"]),
                                 "--out", str(out), "--json", *FAST])
    return r, out


def test_cli_writes_weights_report_and_follow_up(cli_run, toy):
    r, out = cli_run
    assert r.exit_code == EXIT_REJECTED, r.output  # one training image is not in the cache
    res = json.loads(r.stdout)
    assert out.is_file() and res["weights"] == str(out)
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["stage"] == "pretrain-ssl" and rep["arch"] == "tiny"
    assert rep["settings"]["patch_size"] == 24 and rep["settings"]["temperature"] == 0.2
    assert rep["n_patches"] > 0 and rep["n_images_used"] > 0
    assert len(rep["history"]) == 1 and {"loss", "accuracy", "chance"} <= set(rep["history"][0])
    assert rep["seconds"] > 0 and rep["mammolens_version"] and rep["torch_version"]
    assert rep["manifest_hash"] == manifest_hash(read_manifest(toy["manifest"]))
    patch_cmd, train_cmd = rep["follow_up"]
    assert patch_cmd.startswith("mammolens pretrain-patches ") and f"--init {out}" in patch_cmd
    assert "--tiny-width 4" in patch_cmd
    assert train_cmd.startswith("mammolens train ") and f"model.pretrained={out}" in train_cmd


def test_weights_load_into_attention_model(cli_run):
    from mammolens.models import create_model

    _, out = cli_run
    model = create_model("attention_tiny", pretrained=str(out), tiny_width=4)
    assert model.loc_head_from_patch is False  # SSL weights have no patch head
    blob = torch.load(out, map_location="cpu", weights_only=True)
    assert blob["meta"]["method"] == "simclr" and "patch_head" not in blob


def test_missing_cache_entry_becomes_qc_row(cli_run, toy):
    _, out = cli_run
    qc = pd.read_csv(out.with_name(out.stem + "_qc.csv"), dtype=str, keep_default_na=False)
    assert qc["image_id"].tolist() == [toy["uncached"]]
    assert qc["stage"].tolist() == ["pretrain-ssl"] and qc["severity"].tolist() == ["reject"]
    assert qc["reason"].iloc[0].startswith("not in the cache")
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["n_images_rejected"] == 1 and rep["image_ids_rejected"] == [toy["uncached"]]
    assert toy["uncached"] not in rep["image_ids_used"]


def test_held_out_images_never_loaded_nor_sampled(toy, tmp_path, monkeypatch):
    loaded: list[str] = []
    real_load = Cache.load

    def spy_load(self, image_id, *a, **kw):
        loaded.append(str(image_id))
        return real_load(self, image_id, *a, **kw)

    seen = {}
    real_ssl = sp.ssl_pretrain

    def spy_ssl(images, image_ids, out, **kw):
        seen["ids"], seen["exclude"] = list(image_ids), set(kw["exclude"])
        return real_ssl(images, image_ids, out, **kw)

    monkeypatch.setattr(Cache, "load", spy_load)
    monkeypatch.setattr(sp, "ssl_pretrain", spy_ssl)
    res = pretrain_ssl_from_cache(toy["manifest"], toy["cache"], tmp_path / "s.pt", **LIB_FAST)
    df = toy["df"]
    held = set(df.loc[df["split"] != "train", "image_id"])
    train = set(df.loc[df["split"] == "train", "image_id"])
    assert set(loaded) == train and not (set(loaded) & held)
    assert seen["exclude"] == held and set(seen["ids"]) == train - {toy["uncached"]}
    # labels are not used: both classes of the training split give patches
    labels = set(df.loc[df["image_id"].isin(seen["ids"]), "label"])
    assert labels == {0, 1}
    assert res.n_images_excluded == len(held) and res.n_images_loaded == len(train) - 1
    rep = json.loads(res.report.read_text())
    assert set(rep["image_ids_used"]) <= train


def test_all_splits_and_bad_splits(toy, tmp_path):
    res = pretrain_ssl_from_cache(toy["manifest"], toy["cache"], tmp_path / "a.pt", splits=("all",), **LIB_FAST)
    assert res.n_images_excluded == 0 and res.n_images_loaded == len(toy["df"]) - 1
    df = toy["df"].copy()
    df["split"] = ""
    with pytest.raises(ConfigError, match="mammolens split"):
        pretrain_ssl_from_cache(df, toy["cache"], tmp_path / "p.pt", **LIB_FAST)
    with pytest.raises(ConfigError, match="unknown split"):
        pretrain_ssl_from_cache(toy["df"], toy["cache"], tmp_path / "p.pt", splits=("training",), **LIB_FAST)


def test_no_usable_image_is_a_clear_error(toy, tmp_path):
    df = toy["df"]
    only = df[df["image_id"] == toy["uncached"]].copy()
    only["path"] = [str(toy["dir"] / p) for p in only["path"]]
    write_manifest(only, tmp_path / "one.csv")
    r = CliRunner().invoke(app, ["pretrain-ssl", str(tmp_path / "one.csv"), "--cache", str(toy["cache"]),
                                 "--out", str(tmp_path / "x.pt"), *FAST])
    assert r.exit_code == EXIT_ERROR
    assert "no usable image" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.pt").exists()


def test_help_has_example():
    r = CliRunner().invoke(app, ["pretrain-ssl", "--help"])
    assert r.exit_code == 0 and "Example" in r.output and "--per-image" in r.output
