"""The optional benign output (``model.benign_output``): both training paths, its loss,
the run folder's record, and the refusal on a manifest without benign labels."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from mammolens.errors import ManifestError
from mammolens.testing.toydata import make_toy_cache, make_toy_cohort
from mammolens.train.api import train
from mammolens.train.losses import benign_loss, mammo_loss

FAST = ["train.max_epochs=2", "data.batch_size=8", "train.log_every_n_steps=1", "model.benign_output=true"]


@pytest.fixture(scope="module")
def benign_toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("btoy")
    manifest = make_toy_cohort(d, n_patients=16, size=(96, 80), seed=3, benign_fraction=0.6)
    make_toy_cache(manifest, d / "cache", size=(64, 48))
    return manifest, d / "cache"


def _benign_head(state: dict) -> dict:
    return {k: v for k, v in state.items() if "benign" in k}


def test_toy_cohort_has_benign_findings_in_every_split(benign_toy):
    from mammolens.data.manifest import benign_labels, read_manifest

    m = read_manifest(benign_toy[0])
    b = benign_labels(m)
    for sp in ("train", "val"):
        d = b[m["split"] == sp]
        assert (d == 1).any() and (d == 0).any(), sp
    # benign breasts are not malignant, and carry a benign circle
    ben = m[b == 1]
    assert (ben["label"] == 0).all() and (ben["outcome"] == "benign").all()
    assert ben["lesions"].str.contains('"pathology": "benign"').all()


def test_whole_image_stage_trains_the_benign_head(benign_toy, tmp_path):
    manifest, cache = benign_toy
    torch.manual_seed(0)
    res = train(manifest, cache, config="tiny", out=tmp_path / "run", overrides=FAST, progress=False)
    run = res.run_dir
    meta = json.loads((run / "meta.json").read_text())
    assert meta["outputs"] == ["malignant", "benign"]
    assert meta["benign"]["n_train_benign"] > 0 and meta["benign"]["n_train_not_benign"] > 0
    ck = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ck["hyper_parameters"]["config"]["model"]["benign_output"] is True
    head = _benign_head(ck["state_dict"])
    assert head and all(k.startswith("model.benign_") for k in head)
    # the head learned: its weights moved from the initialisation the same seed gives
    from mammolens.config import config_from_dict
    from mammolens.models import create_model, model_kwargs_from_config

    mc = config_from_dict(ck["hyper_parameters"]["config"]).model
    torch.manual_seed(0)  # training seeds the model's initialisation with train.seed (0)
    init = _benign_head({f"model.{k}": v for k, v in create_model(mc.name, pretrained=mc.pretrained, **model_kwargs_from_config(mc)).state_dict().items()})
    assert set(init) == set(head)
    assert any(not torch.allclose(head[k], init[k]) for k in head)
    m = pd.read_csv(run / "metrics.csv")
    assert "train_benign" in m.columns and m["train_benign"].dropna().gt(0).all()
    assert "val_benign_auc" in m.columns and m["val_benign_auc"].dropna().between(0, 1).all()
    # model selection stays on the malignant AUC
    assert res.best_val_auc == pytest.approx(max(h["val_auc"] for h in res.history))


def test_heads_stage_trains_the_benign_head(benign_toy, tmp_path):
    manifest, cache = benign_toy
    over = ["model.benign_output=true", "heads.enabled=true", "heads.epochs=4", "heads.patience=4", "train.max_epochs=0",
            "model.pretrained=none"]
    res = train(manifest, cache, config="tiny", out=tmp_path / "heads", overrides=over, progress=False)
    meta = json.loads((res.run_dir / "meta.json").read_text())
    assert meta["outputs"] == ["malignant", "benign"]
    hist = meta["heads_stage"]["history"]
    assert len(hist) >= 1 and all(0.0 <= h["val_benign_auc"] <= 1.0 for h in hist)
    ck = torch.load(res.run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert _benign_head(ck["state_dict"])
    assert ck["hyper_parameters"]["benign_pos_weight"] == pytest.approx(meta["benign"]["benign_pos_weight"])


def test_option_on_a_manifest_without_benign_labels_is_a_clear_error(tmp_path):
    d = tmp_path / "plain"
    manifest = make_toy_cohort(d, n_patients=8, size=(96, 80), seed=4)  # malignant and normal only
    make_toy_cache(manifest, d / "cache", size=(64, 48))
    with pytest.raises(ManifestError, match=r"model\.benign_output is on but the train split has no benign finding"):
        train(manifest, d / "cache", config="tiny", out=tmp_path / "r", overrides=FAST, progress=False)
    assert not (tmp_path / "r" / "checkpoints").exists()

    from typer.testing import CliRunner

    from mammolens.cli import app

    r = CliRunner().invoke(app, ["train", str(manifest), "--cache", str(d / "cache"), "--out", str(tmp_path / "c"),
                                 "--set", "model.benign_output=true"], env={"COLUMNS": "400"})
    assert r.exit_code == 1
    err = " ".join(r.output.split())
    assert "model.benign_output is on but the train split has no benign finding" in err
    assert "Traceback" not in r.output


def test_benign_loss_ignores_unknown_targets():
    z = torch.tensor([2.0, -1.0, 0.5, 3.0], requires_grad=True)
    out = {"logit": torch.zeros(4), "benign_logit": z}
    t = torch.tensor([1.0, 0.0, math.nan, math.nan])
    got = benign_loss(out, {"benign": t})
    want = torch.nn.functional.binary_cross_entropy_with_logits(z[:2], t[:2])
    assert torch.allclose(got, want)
    got.backward()
    assert z.grad[2] == 0 and z.grad[3] == 0 and z.grad[0] != 0
    # nothing known: zero, still part of the graph
    none = benign_loss(out, {"benign": torch.full((4,), math.nan)})
    assert float(none.detach()) == 0.0 and none.requires_grad
    # no benign output: the loss is the malignant one alone
    batch = {"label": torch.tensor([1.0, 0.0, 0.0, 1.0]), "benign": t, "mask": torch.zeros(4, 8, 8), "has_mask": torch.zeros(4, dtype=torch.bool)}
    plain, parts = mammo_loss({"logit": torch.tensor([1.0, -1.0, 0.0, 2.0])}, batch, loc_weight=0.0)
    assert "benign" not in parts
    both, parts = mammo_loss({"logit": torch.tensor([1.0, -1.0, 0.0, 2.0]), "benign_logit": z.detach()}, batch,
                             loc_weight=0.0, benign_weight=0.5)
    assert torch.allclose(both, plain + 0.5 * parts["benign"])


def test_fit_heads_trains_the_benign_head_only_from_known_targets():
    """The heads stage passes the 4th item (benign target) to the loss; unknown targets
    (NaN) leave the benign head where it was (no weight decay: that alone moves weights)."""
    from mammolens.models import create_model
    from mammolens.train.heads import fit_heads

    def items(n: int, seed: int, benign: bool):
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            img = rng.random((64, 48), dtype=np.float32) * 0.2
            if i % 2:
                img[10:22, 10:22] += 0.8
            out.append((img, None, i % 2, float(i % 3 == 0) if benign else math.nan))
        return out

    def heads(benign: bool) -> tuple[dict, dict]:
        torch.manual_seed(0)
        m = create_model("attention_tiny", pretrained="none", tiny_width=4, benign_output=True)
        before = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("benign_")}
        res = fit_heads(m, items(8, 0, benign), items(6, 1, benign), epochs=2, lr=1e-2, weight_decay=0.0, seed=0, select="last")
        after = {k: v for k, v in m.state_dict().items() if k.startswith("benign_")}
        return before, after, res

    before, after, res = heads(True)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(0.0 <= h["val_benign_auc"] <= 1.0 for h in res.history)
    before, after, res = heads(False)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all("val_benign_auc" not in h for h in res.history)
