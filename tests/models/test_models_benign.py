"""The optional benign output of both models: shapes, independence from the malignant path."""

from __future__ import annotations

import pytest
import torch

from mammolens.config import load_config
from mammolens.models import create_model, model_kwargs_from_config


@pytest.mark.parametrize("name", ["attention_tiny", "baseline_tiny"])
def test_benign_output_is_a_second_logit(name):
    torch.manual_seed(0)
    plain = create_model(name, tiny_width=4)
    torch.manual_seed(0)
    both = create_model(name, tiny_width=4, benign_output=True)
    x = torch.rand(3, 1, 64, 48)
    a, b = plain.eval()(x), both.eval()(x)
    assert "benign_logit" not in a and b["benign_logit"].shape == (3,)
    # created after the malignant path: the same seed gives the same malignant model
    shared = plain.state_dict()
    assert all(torch.equal(v, both.state_dict()[k]) for k, v in shared.items())
    assert torch.allclose(a["logit"], b["logit"]) and torch.allclose(a["localization"], b["localization"])
    extra = set(both.state_dict()) - set(shared)
    assert extra and all(k.startswith("benign_") for k in extra)
    # the benign logit learns from its own loss only through its own head and the trunk
    b["benign_logit"].sum().backward()
    assert both.classifier.weight.grad is None
    assert both.benign_classifier.weight.grad is not None


def test_config_option_reaches_the_model():
    cfg = load_config("tiny", ["model.benign_output=true"])
    m = create_model(cfg.model.name, **model_kwargs_from_config(cfg.model))
    assert m.benign_output is True
    assert load_config("tiny").model.benign_output is False
