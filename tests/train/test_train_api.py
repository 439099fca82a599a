"""train(): a tiny end-to-end run, resume, NaN stop, input errors, CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from mammolens.errors import ConfigError, LeakageError, ManifestError
from mammolens.testing.toydata import make_toy_cache, make_toy_cohort
from mammolens.train.api import train
from mammolens.train.module import MammoLitModule, NonFiniteLossError

FAST = ["train.max_epochs=2", "data.batch_size=8", "train.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    manifest = make_toy_cohort(d, n_patients=12, size=(96, 80), seed=1)
    make_toy_cache(manifest, d / "cache", size=(64, 48))
    return manifest, d / "cache"


@pytest.fixture(scope="module")
def run2(toy, tmp_path_factory):
    manifest, cache = toy
    out = tmp_path_factory.mktemp("run") / "run"
    res = train(manifest, cache, config="tiny", out=out, overrides=FAST, progress=False)
    return res


def test_end_to_end_writes_run_folder(run2, toy):
    res = run2
    run = res.run_dir
    assert res.epochs_run == 2 and res.status == "completed"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert res.best_checkpoint == run / "checkpoints" / "best.ckpt"
    assert 0.0 <= res.best_val_auc <= 1.0
    meta = json.loads((run / "meta.json").read_text())
    from mammolens.data.manifest import manifest_hash, read_manifest

    assert meta["manifest_hash"] == manifest_hash(read_manifest(toy[0]))
    assert meta["version"] and meta["model"] == "attention_tiny"
    assert meta["preprocess"]["size"] == [64, 48]
    assert meta["status"] == "completed" and meta["epochs_run"] == 2
    cfg = (run / "config.yaml").read_text()
    assert "arch: tiny" in cfg and "max_epochs: 2" in cfg
    m = pd.read_csv(run / "metrics.csv")
    assert {"val_auc", "val_loss", "train_loss_step"} <= set(m.columns)
    assert sorted(m["epoch"].dropna().astype(int).unique()) == [0, 1]
    assert any((run / "tensorboard").iterdir())
    assert [h["epoch"] for h in res.history] == [0, 1]
    # the checkpoint carries what predict needs
    ck = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ck["mammolens"]["preprocess"]["size"] == [64, 48]
    assert ck["hyper_parameters"]["config"]["model"]["arch"] == "tiny"


def test_same_seed_same_weights(toy, tmp_path, run2):
    manifest, cache = toy
    res = train(manifest, cache, config="tiny", out=tmp_path / "again", overrides=FAST, progress=False)
    a = torch.load(res.last_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(run2.last_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_from_last_epoch(toy, tmp_path):
    manifest, cache = toy
    out = tmp_path / "run"
    train(manifest, cache, config="tiny", out=out, overrides=["train.max_epochs=1", "data.batch_size=8"], progress=False)
    steps_one_epoch = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    with pytest.raises(ConfigError, match="--resume"):
        train(manifest, cache, config="tiny", out=out, progress=False)
    res = train(manifest, cache, config="tiny", out=out, overrides=["train.max_epochs=2"], resume=True, progress=False)
    assert res.epochs_run == 2
    m = pd.read_csv(out / "metrics.csv")
    # epoch 0 came from the first run and was kept; epoch 1 was trained after resuming
    assert sorted(m.loc[m["val_auc"].notna(), "epoch"].astype(int)) == [0, 1]
    ck = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 2 * steps_one_epoch  # one more epoch, not two


def test_resume_without_checkpoint_is_an_error(toy, tmp_path):
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(*toy, config="tiny", out=tmp_path / "none", resume=True, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(toy, tmp_path, monkeypatch):
    manifest, cache = toy
    real = MammoLitModule.compute_loss

    def poisoned(self, out, batch):
        loss, parts = real(self, out, batch)
        if self.training and self.current_epoch >= 1:
            loss = loss * float("nan")
        return loss, parts

    monkeypatch.setattr(MammoLitModule, "compute_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="non-finite training loss .* epoch 1"):
        train(manifest, cache, config="tiny", out=out, overrides=FAST, progress=False)
    last = out / "checkpoints" / "last.ckpt"
    ck = torch.load(last, weights_only=True)
    assert ck["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"].startswith("failed") and meta["last_good_checkpoint"] == str(last)


def _manifest(toy):
    from mammolens.data.manifest import read_manifest

    return read_manifest(toy[0])


def test_leakage_is_refused(toy, tmp_path):
    df = _manifest(toy)
    pid = df.loc[df["split"] == "train", "patient_id"].iloc[0]
    df.loc[(df["patient_id"] == pid) & (df["laterality"] == "R"), "split"] = "val"
    with pytest.raises(LeakageError):
        train(df, toy[1], config="tiny", out=tmp_path / "r", progress=False)


def test_one_class_empty_split_and_no_labels(toy, tmp_path):
    df = _manifest(toy)
    one = df.copy()
    one.loc[one["split"] == "val", "label"] = 0
    with pytest.raises(ManifestError, match="only class 0"):
        train(one, toy[1], config="tiny", out=tmp_path / "a", progress=False)
    empty = df[df["split"] != "val"]
    with pytest.raises(ManifestError, match="'val' is empty"):
        train(empty, toy[1], config="tiny", out=tmp_path / "b", progress=False)
    nolab = df.copy()
    nolab["label"] = pd.NA
    with pytest.raises(ManifestError, match="no labels"):
        train(nolab, toy[1], config="tiny", out=tmp_path / "c", progress=False)


def test_bad_config_and_model_choice(toy, tmp_path):
    with pytest.raises(ConfigError, match="unknown configuration key"):
        train(*toy, config="tiny", out=tmp_path / "x", overrides=["optim.learning_rate=1"], progress=False)
    with pytest.raises(ConfigError, match="--model"):
        train(*toy, config="tiny", out=tmp_path / "y", model="transformer", progress=False)
    with pytest.raises(ConfigError, match="unknown preset"):
        train(*toy, config="huge", out=tmp_path / "z", progress=False)


def test_cli_train_baseline_json(toy, tmp_path):
    from typer.testing import CliRunner

    from mammolens.cli import app

    manifest, cache = toy
    out = tmp_path / "cli"
    r = CliRunner().invoke(
        app,
        ["train", str(manifest), "--cache", str(cache), "--out", str(out), "--model", "baseline", "--set", "train.max_epochs=1", "--json", "--device", "cpu"],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["model"] == "baseline_tiny" and res["epochs_run"] == 1
    assert (out / "checkpoints" / "best.ckpt").exists()
    r = CliRunner().invoke(app, ["train", str(manifest), "--cache", str(cache), "--out", str(tmp_path / "e"), "--set", "optim.lr=-1"])
    assert r.exit_code == 1 and "optim.lr" in r.output


_DDP_SCRIPT = """
import sys
from mammolens.train.api import train
if __name__ == "__main__":
    r = train(sys.argv[1], sys.argv[2], config="tiny", out=sys.argv[3], progress=False,
              overrides=["train.max_epochs=1", "train.devices=2", "train.strategy=ddp", "train.accelerator=cpu", "data.num_workers=0"])
    print("RESULT", r.epochs_run, r.n_val, r.best_val_auc)
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes(toy, tmp_path):
    """Lightning DDP (2 CPU processes, gloo): sharded training, AUC from gathered predictions."""
    import subprocess
    import sys

    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "ddp"
    p = subprocess.run([sys.executable, str(script), str(toy[0]), str(toy[1]), str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines and lines[0].split()[1] == "1"
    assert (out / "checkpoints" / "best.ckpt").exists()


@pytest.mark.parametrize("freeze", ["backbone", "early"])
def test_frozen_backbone_keeps_its_weights(toy, tmp_path, run2, freeze):
    """train.freeze: the frozen part of the backbone is bit-identical after training; the
    heads (and any unfrozen layers) learn; batch-norm statistics adapt."""
    manifest, cache = toy
    init = tmp_path / "init.pt"
    from mammolens.models import create_model
    from mammolens.models.backbone import save_backbone_weights

    torch.manual_seed(3)
    save_backbone_weights(create_model("attention_tiny", tiny_width=8).backbone, init)
    res = train(manifest, cache, config="tiny", out=tmp_path / "frozen",
                overrides=[*FAST, f"train.freeze={freeze}", f"model.pretrained={init}", "model.tiny_width=8"], progress=False)
    sd = torch.load(res.last_checkpoint, weights_only=True)["state_dict"]
    start = create_model("attention_tiny", tiny_width=8, pretrained=init).state_dict()
    frozen = [k for k in start if k.startswith("backbone.") and k.endswith(".weight")
              and (freeze == "backbone" or k.startswith(("backbone.stem", "backbone.layer1", "backbone.layer2")))]
    assert frozen
    for k in frozen:
        assert torch.equal(sd[f"model.{k}"], start[k]), k
    assert not torch.equal(sd["model.classifier.weight"], start["classifier.weight"])
    if freeze == "early":
        assert not torch.equal(sd["model.backbone.layer4.0.conv1.weight"], start["backbone.layer4.0.conv1.weight"])
    bn = [k for k in start if k.startswith("backbone.") and k.endswith("running_mean")]
    assert any(not torch.equal(sd[f"model.{k}"], start[k]) for k in bn)  # statistics adapted


def test_freeze_rejects_unknown_value(toy, tmp_path):
    manifest, cache = toy
    with pytest.raises(ConfigError):
        train(manifest, cache, config="tiny", out=tmp_path / "x", overrides=[*FAST, "train.freeze=all"], progress=False)
