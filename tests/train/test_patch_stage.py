"""``mammolens pretrain-patches`` / pretrain_patches_from_cache on a tiny toy cohort (seconds)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

import mammolens.train.patch_pretrain as pp  # noqa: E402
from mammolens.cli import app  # noqa: E402
from mammolens.data.manifest import read_manifest, write_manifest  # noqa: E402
from mammolens.errors import EXIT_ERROR, EXIT_REJECTED, ConfigError  # noqa: E402
from mammolens.testing.toydata import make_toy_cache, make_toy_cohort  # noqa: E402
from mammolens.train.patch_stage import pretrain_patches_from_cache  # noqa: E402

FAST = ["--arch", "tiny", "--tiny-width", "4", "--patch-size", "24", "--per-lesion", "4", "--background", "2",
        "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
LIB_FAST = {"arch": "tiny", "tiny_width": 4, "patch_size": 24, "per_lesion": 4, "background_per_image": 2,
            "epochs": 1, "batch_size": 16, "device": "cpu", "max_steps": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy cohort: every lesion outlined except one training positive; one training image not cached."""
    d = tmp_path_factory.mktemp("patchstage")
    make_toy_cohort(d, n_patients=8, size=(80, 64), mask_fraction=1.0, seed=3)
    df = read_manifest(d / "manifest.csv", resolve_paths=False)
    train_pos = df[(df["split"] == "train") & (df["label"] == 1)]["image_id"].tolist()
    train_neg = df[(df["split"] == "train") & (df["label"] == 0)]["image_id"].tolist()
    assert len(train_pos) >= 2 and len(train_neg) >= 2
    no_outline, uncached = train_pos[0], train_neg[0]
    df.loc[df["image_id"] == no_outline, "lesions"] = ""
    write_manifest(df, d / "manifest.csv")
    write_manifest(df[df["image_id"] != uncached], d / "cached.csv")
    make_toy_cache(d / "cached.csv", d / "cache", size=(64, 52))
    return {"dir": d, "manifest": d / "manifest.csv", "cache": d / "cache", "df": df,
            "no_outline": no_outline, "uncached": uncached}


@pytest.fixture(scope="module")
def cli_run(toy):
    out = toy["dir"] / "w" / "patch_tiny.pt"
    r = CliRunner().invoke(app, ["pretrain-patches", str(toy["manifest"]), "--cache", str(toy["cache"]),
                                 "--out", str(out), "--json", *FAST])
    return r, out


def test_cli_writes_weights_report_and_follow_up(cli_run, toy):
    r, out = cli_run
    assert r.exit_code == EXIT_REJECTED, r.output  # one training image is not in the cache
    res = json.loads(r.stdout)
    assert out.is_file() and res["weights"] == str(out)
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["stage"] == "pretrain-patches" and rep["arch"] == "tiny" and rep["settings"]["patch_size"] == 24
    assert rep["counts"]["lesion"] > 0 and rep["counts"]["background"] > 0
    assert rep["n_patches"] == sum(rep["counts"].values())
    assert len(rep["history"]) == 1 and {"loss", "accuracy"} <= set(rep["history"][0])
    assert rep["mammolens_version"] and rep["torch_version"] and len(rep["manifest_hash"]) == 64
    from mammolens.data.manifest import manifest_hash

    assert rep["manifest_hash"] == manifest_hash(read_manifest(toy["manifest"]))
    fu = rep["follow_up"]
    assert fu.startswith("mammolens train ") and f"model.pretrained={out}" in fu
    assert "--cache" in fu and "model.arch=tiny" in fu and "model.tiny_width=4" in fu


def test_only_training_images_are_used(cli_run, toy):
    _, out = cli_run
    rep = json.loads(out.with_suffix(".json").read_text())
    df = toy["df"]
    split_of = dict(zip(df["image_id"], df["split"], strict=True))
    assert rep["image_ids_used"] and all(split_of[i] == "train" for i in rep["image_ids_used"])
    assert rep["n_images_excluded"] == int((df["split"] != "train").sum())


def test_missing_cache_entry_becomes_qc_row(cli_run, toy):
    _, out = cli_run
    qc = pd.read_csv(out.with_name(out.stem + "_qc.csv"), dtype=str, keep_default_na=False)
    assert qc["image_id"].tolist() == [toy["uncached"]]
    assert qc["stage"].tolist() == ["pretrain-patches"] and qc["severity"].tolist() == ["reject"]
    assert qc["reason"].iloc[0].startswith("not in the cache") and qc["path"].iloc[0].endswith(".png")
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["n_images_rejected"] == 1 and rep["image_ids_rejected"] == [toy["uncached"]]
    assert toy["uncached"] not in rep["image_ids_used"] and rep["n_images_used"] > 0


def test_positive_without_outline_and_held_out_images_give_no_patch(toy, tmp_path, monkeypatch):
    seen = {}
    real = pp.sample_patches

    def spy(images, masks, image_ids, **kw):
        ps = real(images, masks, image_ids, **kw)
        seen["ids"], seen["exclude"] = set(ps.image_ids.tolist()), set(kw["exclude"])
        return ps

    monkeypatch.setattr(pp, "sample_patches", spy)
    res = pretrain_patches_from_cache(toy["manifest"], toy["cache"], tmp_path / "p.pt", **LIB_FAST)
    df = toy["df"]
    held = set(df.loc[df["split"] != "train", "image_id"])
    assert seen["exclude"] == held and not (seen["ids"] & held)
    assert toy["no_outline"] not in seen["ids"] and toy["uncached"] not in seen["ids"]
    assert res.n_images_without_annotation == 1 and res.n_images_rejected == 1
    rep = json.loads(res.report.read_text())
    assert rep["image_ids_without_annotation"] == [toy["no_outline"]]
    # negatives without masks give background patches
    negs = set(df.loc[(df["split"] == "train") & (df["label"] == 0), "image_id"]) - {toy["uncached"]}
    assert negs <= seen["ids"]


def test_weights_load_into_attention_model(cli_run):
    from mammolens.models import create_model

    _, out = cli_run
    model = create_model("attention_tiny", pretrained=str(out), tiny_width=4)
    assert model.loc_head_from_patch is True
    blob = torch.load(out, map_location="cpu", weights_only=True)
    assert blob["meta"]["arch"] == "tiny" and blob["patch_head"]["weight"].shape == (2, 32)


def test_no_lesions_is_a_clear_error(toy, tmp_path):
    df = toy["df"]
    neg = df[(df["split"] == "train") & (df["label"] == 0)].head(2).copy()
    neg["path"] = [str(toy["dir"] / p) for p in neg["path"]]
    write_manifest(neg, tmp_path / "neg.csv")
    make_toy_cache(tmp_path / "neg.csv", tmp_path / "cache", size=(64, 52))
    r = CliRunner().invoke(app, ["pretrain-patches", str(tmp_path / "neg.csv"), "--cache", str(tmp_path / "cache"),
                                 "--out", str(tmp_path / "x.pt"), *FAST])
    assert r.exit_code == EXIT_ERROR
    assert "no lesion annotations" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.pt").exists()


def test_split_required_unless_all(toy, tmp_path):
    df = toy["df"].copy()
    df["split"] = ""
    with pytest.raises(ConfigError, match="mammolens split"):
        pretrain_patches_from_cache(df, toy["cache"], tmp_path / "p.pt", **LIB_FAST)
    with pytest.raises(ConfigError, match="unknown split"):
        pretrain_patches_from_cache(toy["df"], toy["cache"], tmp_path / "p.pt", splits=("training",), **LIB_FAST)


def test_help_has_example():
    r = CliRunner().invoke(app, ["pretrain-patches", "--help"])
    assert r.exit_code == 0 and "Example" in r.output and "--per-lesion" in r.output
