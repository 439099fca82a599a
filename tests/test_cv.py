"""``mammolens cv`` and the recipe stages inside ``train``, on a tiny toy cohort (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from mammolens.cli import app  # noqa: E402
from mammolens.cv import cross_validate, fold_manifest  # noqa: E402
from mammolens.data.manifest import read_manifest, write_manifest  # noqa: E402
from mammolens.data.split import kfold_manifest  # noqa: E402
from mammolens.errors import ConfigError, LeakageError  # noqa: E402
from mammolens.testing.toydata import make_toy_cache, make_toy_cohort  # noqa: E402
from mammolens.train.api import train  # noqa: E402

FAST = ["model.arch=tiny", "model.tiny_width=4", "model.pretrained=none", "train.max_epochs=1", "data.batch_size=8",
        "train.log_every_n_steps=1", "data.cache_size=null"]
PATCH = ["patch.enabled=true", "patch.patch_size=24", "patch.per_lesion=2", "patch.background_per_image=1",
         "patch.epochs=1", "patch.batch_size=16", "patch.freeze=none"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("cv")
    manifest = make_toy_cohort(d, n_patients=15, size=(80, 64), mask_fraction=1.0, seed=5)
    make_toy_cache(manifest, d / "cache", size=(64, 52))
    return {"dir": d, "manifest": manifest, "cache": d / "cache", "df": read_manifest(manifest)}


def test_fold_manifest_is_patient_level_and_refuses_leaks(toy):
    df = kfold_manifest(toy["df"], k=3, seed=0)
    m = fold_manifest(df, 1, val=0.2, seed=0)
    assert set(m["split"]) == {"train", "val", "test"}
    assert set(m.loc[m["split"] == "test", "image_id"]) == set(df.loc[df["fold"] == 1, "image_id"])
    per_patient = m.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    leaked = df.copy()
    # one woman's two breasts in two folds: the check before the fold refuses it
    pid = leaked["patient_id"].iloc[0]
    rows = leaked.index[leaked["patient_id"] == pid]
    leaked.loc[rows[0], "fold"] = 0
    leaked.loc[rows[1:], "fold"] = 1
    with pytest.raises(LeakageError):
        fold_manifest(leaked, 0, val=0.2, seed=0)


def test_cv_end_to_end_pools_every_image_once_and_resumes(toy, tmp_path, monkeypatch):
    out = tmp_path / "cv"
    res = cross_validate(toy["manifest"], toy["cache"], out=out, config="tiny", folds=3, seeds=[0],
                         overrides=FAST, progress=False)
    oof = pd.read_csv(out / "oof_seed0.csv")
    ids = toy["df"]["image_id"].astype(str)
    assert sorted(oof["image_id"].astype(str)) == sorted(ids)  # every image exactly once
    assert oof["fold"].nunique() == 3 and oof["score"].between(0, 1).all()
    cv = json.loads((out / "cv.json").read_text())
    s0 = cv["per_seed"]["0"]
    assert [f["fold"] for f in s0["folds"]] == [0, 1, 2]
    assert 0 <= s0["pooled"]["auc"] <= 1 and s0["pooled"]["ci_low"] <= s0["pooled"]["auc"] <= s0["pooled"]["ci_high"]
    assert s0["pooled"]["n"] == len(ids) and s0["missing_images"] == []
    fold_aucs = [f["test"]["auc"] for f in s0["folds"] if f["test"]["auc"] is not None]
    assert s0["fold_auc_mean"] == pytest.approx(np.mean(fold_aucs))
    loc = s0["localization"]["malignant_images"]
    assert loc["n"] > 0 and 0 <= loc["hits"] <= loc["n"]
    assert res.per_seed[0]["pooled"]["auc"] == s0["pooled"]["auc"]
    # the pooled table is what evaluate reads
    from mammolens.evaluate import evaluate

    evaluate(out / "oof_seed0.csv", manifest=out / "manifest_oof.csv", out=tmp_path / "ev")
    res_json = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert "image" in json.dumps(res_json)
    # resume: finished folds are skipped (train would fail if called)
    import mammolens.train as mt

    monkeypatch.setattr(mt, "train", lambda *a, **k: pytest.fail("a finished fold was trained again"))
    again = cross_validate(toy["manifest"], toy["cache"], out=out, config="tiny", folds=3, seeds=[0],
                           overrides=FAST, progress=False)
    assert all(f.get("resumed") for f in again.per_seed[0]["folds"])
    assert again.per_seed[0]["pooled"]["auc"] == s0["pooled"]["auc"]
    assert s0["localization"]["heatmaps_missing"] == []
    # a moved cv folder resumes with its hit rates (the tables hold absolute heatmap paths)
    import shutil

    moved = tmp_path / "moved_cv"
    shutil.move(str(out), moved)
    again = cross_validate(toy["manifest"], toy["cache"], out=moved, config="tiny", folds=3, seeds=[0],
                           overrides=FAST, progress=False)
    assert again.per_seed[0]["localization"] == s0["localization"]
    # a heatmap that is gone is named, not silently dropped from the denominators
    oof = pd.read_csv(moved / "oof_seed0.csv")
    annotated = set(toy["df"].loc[toy["df"]["lesions"].fillna("").astype(str).str.len() > 2, "image_id"].astype(str))
    lost = oof.loc[(oof["label"] == 1) & oof["image_id"].astype(str).isin(annotated)].iloc[0]
    (moved / "seed0" / f"fold{int(lost['fold'])}" / "heatmaps" / Path(lost["heatmap"]).name).unlink()
    again = cross_validate(toy["manifest"], toy["cache"], out=moved, config="tiny", folds=3, seeds=[0],
                           overrides=FAST, progress=False)
    loc2 = again.per_seed[0]["localization"]
    assert loc2["heatmaps_missing"] == [str(lost["image_id"])]
    assert loc2["malignant_images"]["n"] == loc["n"] - 1


def test_cv_refuses_another_configuration_in_the_same_folder(toy, tmp_path):
    out = tmp_path / "cv"
    out.mkdir()
    (out / "cv.json").write_text(json.dumps({"config": "paper", "folds": 5}))
    with pytest.raises(ConfigError, match="another --out"):
        cross_validate(toy["manifest"], toy["cache"], out=out, config="tiny", folds=3, overrides=FAST, progress=False)


def test_cv_cli_usage_and_unlabelled_manifest(toy, tmp_path):
    r = CliRunner().invoke(app, ["cv", str(toy["manifest"]), "--cache", str(toy["cache"]), "--out", str(tmp_path / "o"),
                                 "--seeds", "a,b"])
    assert r.exit_code == 2
    df = toy["df"].copy()
    df["label"] = df["label"].astype("Int64")
    df.loc[df.index[0], "label"] = pd.NA
    bad = tmp_path / "unlabelled.csv"
    write_manifest(df, bad)
    r = CliRunner().invoke(app, ["cv", str(bad), "--cache", str(toy["cache"]), "--out", str(tmp_path / "o2"), "--config", "tiny"])
    assert r.exit_code == 1 and "without a 0/1 label" in " ".join(r.output.split())


def test_train_runs_the_patch_stage_inside_and_reuses_it(toy, tmp_path):
    out = tmp_path / "run"
    res = train(toy["manifest"], toy["cache"], config="tiny", out=out, overrides=FAST + PATCH, progress=False)
    w = out / "patch_stage" / "weights.pt"
    assert w.is_file() and res.status in ("completed", "early_stopped")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["patch_stage"]["weights"] == str(w) and meta["patch_stage"]["reused"] is False
    rep = json.loads(w.with_suffix(".json").read_text())
    assert rep["splits"] == ["train"]  # only training images give patches
    held = set(toy["df"].loc[toy["df"]["split"] != "train", "image_id"].astype(str))
    assert not held & set(map(str, rep.get("image_ids", [])))
    # the whole-image model started from the patch stage (localisation head from the patch head)
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["pretrained"] == str(w)
    # a second run into a new folder whose patch stage is already there reuses it
    out2 = tmp_path / "run2"
    (out2 / "patch_stage").mkdir(parents=True)
    for f in (out / "patch_stage").iterdir():
        (out2 / "patch_stage" / f.name).write_bytes(f.read_bytes())
    train(toy["manifest"], toy["cache"], config="tiny", out=out2, overrides=FAST + PATCH, progress=False)
    assert json.loads((out2 / "meta.json").read_text())["patch_stage"]["reused"] is True


def test_train_refuses_a_cache_of_another_size_with_the_command_to_run(toy, tmp_path):
    with pytest.raises(ConfigError) as ei:
        train(toy["manifest"], toy["cache"], config="tiny", out=tmp_path / "r",
              overrides=[*FAST[:-1], "data.cache_size=1024x832"], progress=False)
    msg = str(ei.value)
    assert "64x52" in msg and "1024x832" in msg and "mammolens preprocess" in msg and "--size 1024x832" in msg
    assert "\n" not in msg
    r = CliRunner().invoke(app, ["train", str(toy["manifest"]), "--cache", str(toy["cache"]), "--out", str(tmp_path / "r2"),
                                 "--config", "mias"])
    assert r.exit_code == 1 and "--size" in " ".join(r.output.split())


def test_heads_stage_alone_is_a_complete_run_and_keeps_the_backbone(toy, tmp_path):
    """heads.enabled with train.max_epochs=0: the heads are fitted on frozen features and the
    run folder holds checkpoints predict can read; the backbone is bit-identical to its start."""
    from mammolens.models import create_model
    from mammolens.predict import load_predictor

    out = tmp_path / "run"
    over = [*FAST, "heads.enabled=true", "heads.epochs=3", "train.max_epochs=0", "train.loc_target=lesion"]
    res = train(toy["manifest"], toy["cache"], config="tiny", out=out, overrides=over, progress=False)
    assert res.status == "completed" and res.epochs_run == 0 and (out / "checkpoints" / "best.ckpt").is_file()
    meta = json.loads((out / "meta.json").read_text())
    hs = meta["heads_stage"]
    assert 1 <= hs["best_epoch"] <= hs["epochs_run"] <= 3 and len(hs["history"]) == hs["epochs_run"]
    p = load_predictor(out)
    torch.manual_seed(0)  # the same seeded random backbone as the run's start
    start = create_model("attention_tiny", pretrained="none", tiny_width=4)
    for k, v in start.backbone.state_dict().items():
        if "num_batches" in k:
            continue
        assert torch.equal(p.model.backbone.state_dict()[k], v), k
    heads_changed = any(not torch.equal(p.model.state_dict()[k], v) for k, v in start.state_dict().items() if not k.startswith("backbone."))
    assert heads_changed
    with pytest.raises(ConfigError, match="heads.enabled"):
        train(toy["manifest"], toy["cache"], config="tiny", out=tmp_path / "r0", overrides=[*FAST, "train.max_epochs=0"], progress=False)


def test_cv_compare_pairs_the_same_images_and_the_contralateral_ablation(tmp_path):
    """cv-compare: paired DeLong per seed on image_id; cv.json's contralateral ablation."""
    import numpy as np

    from mammolens.cv import compare_cv, contralateral_ablation

    rng = np.random.default_rng(0)
    n = 40
    base = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k // 2}" for k in range(n)],
                         "label": [k % 3 == 0 for k in range(n)]})
    base["label"] = base["label"].astype(int)
    good = base.assign(score=base["label"] * 0.6 + rng.random(n) * 0.5)
    bad = base.assign(score=rng.random(n))
    for d, t in (("A", good), ("B", bad)):
        (tmp_path / d).mkdir()
        t.sample(frac=1, random_state=1).to_csv(tmp_path / d / "oof_seed0.csv", index=False)  # row order differs
    res = compare_cv(tmp_path / "A", tmp_path / "B")
    r = res["seeds"]["0"]
    from mammolens.stats import delong_test

    want = delong_test(base["label"], good["score"], bad["score"])
    assert r["n"] == n and r["auc_a"] == pytest.approx(want.auc_a) and r["p_value"] == pytest.approx(want.p_value)
    r2 = CliRunner().invoke(app, ["cv-compare", str(tmp_path / "A"), str(tmp_path / "B"), "--json"])
    assert r2.exit_code == 0 and json.loads(r2.stdout)["seeds"]["0"]["difference"] == pytest.approx(want.difference)
    (tmp_path / "C").mkdir()
    with pytest.raises(ConfigError, match="share no seed"):
        compare_cv(tmp_path / "A", tmp_path / "C")
    oof = good.assign(logit=good["score"], contralateral_logit=rng.normal(size=n))
    ab = contralateral_ablation(oof, weight=0.5)
    assert ab["n_paired_images"] == n and 0 <= ab["auc_contralateral"] <= 1


def test_folds_are_pooled_with_the_configured_contralateral_weight():
    from mammolens.cv import _with_truth

    df = pd.DataFrame({"image_id": ["a", "b", "c"], "label": [1, 0, 0]})
    pred = pd.DataFrame({"image_id": ["a", "b", "c"], "logit": [1.0, 0.5, -2.0], "score": [0.9, 0.9, 0.9],
                         "contralateral_logit": [0.5, 1.0, np.nan]})
    own = _with_truth(pred, df, 0.0)
    np.testing.assert_allclose(own["score"], 1 / (1 + np.exp(-np.array([1.0, 0.5, -2.0]))))
    diff = _with_truth(pred, df, 0.5)
    # logit - 0.5 * contralateral logit; an image without a partner keeps its own logit
    np.testing.assert_allclose(diff["score"], 1 / (1 + np.exp(-np.array([0.75, 0.0, -2.0]))))
    assert list(diff["label"]) == [1, 0, 0]
