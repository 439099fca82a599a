"""Configuration: presets, dotted overrides, errors naming the key."""

from __future__ import annotations

import pytest

from mammolens.config import list_presets, load_config, parse_overrides
from mammolens.errors import ConfigError


def test_presets_and_overrides(tmp_path):
    assert {"tiny", "paper", "mias"} <= set(list_presets())
    paper = load_config("paper")
    assert paper.model.name == "attention_resnet50" and paper.optim.lr == 1e-4
    assert paper.optim.plateau_factor == 0.1 and paper.train.max_epochs == 50
    assert paper.model.pretrained == "imagenet"
    tiny = load_config("tiny", ["optim.lr=3e-4", "data.augment.hflip=0", "model.score=attention"])
    assert tiny.optim.lr == 3e-4 and tiny.data.augment.hflip == 0 and tiny.model.score == "attention"
    assert parse_overrides(["a.b=1", "c=x=y"]) == {"a.b": 1, "c": "x=y"}
    f = tmp_path / "mine.yaml"
    f.write_text(tiny.to_yaml())
    again = load_config(f)
    assert again.optim.lr == 3e-4 and again.preset == "tiny"


@pytest.mark.parametrize(
    "override,match",
    [
        ("optim.lrr=1", "unknown configuration key 'optim.lrr'"),
        ("nosection.x=1", "unknown configuration key"),
        ("optim.lr=-1", "optim.lr"),
        ("model.arch=vgg", "model.arch"),
        ("train.precision=8", "precision"),
        ("justakey", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", [override])


def test_bad_preset_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("gigantic")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  arch: tiny\n  colour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        load_config(extra)
