"""The shared training loop (mammolens.train.loop): means, selection, early stop, max_steps, NaN."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from mammolens.errors import ConfigError  # noqa: E402
from mammolens.train.loop import NonFiniteLossError, StepOutput, run_epochs  # noqa: E402


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xs = [torch.full((n, 1), float(n)) for n in (1, 3)]  # two batches of sizes 1 and 3

    def batches(epoch):
        yield from xs

    def step(x):
        loss = (model(x) ** 2).mean()
        return StepOutput(loss, weight=len(x), sums={"big": float((x > 2).sum())})

    return model, opt, batches, step


def test_epoch_means_are_weighted_and_the_model_ends_in_eval_mode():
    model, opt, batches, step = _setup()
    seen = []
    res = run_epochs(model, epochs=2, batches=batches, step=step, optimizer=opt, on_epoch=seen.append)
    assert [r["epoch"] for r in res.history] == [1, 2] and seen == res.history
    assert res.steps == 4 and res.epochs_run == 2 and res.best_epoch == 2 and res.best_score is None
    assert res.history[0]["big"] == pytest.approx(3 / 4)  # 3 of the 4 samples are > 2
    assert not model.training


def test_keep_best_restores_the_best_epoch_and_stops_after_patience():
    model, opt, batches, step = _setup()
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.8, 0.95])
    states = {}

    def end_epoch(ep, rec):
        states[ep] = copy.deepcopy(model.state_dict())
        return {"val": next(scores)}

    res = run_epochs(model, epochs=6, batches=batches, step=step, optimizer=opt, end_epoch=end_epoch,
                     keep="best", monitor="val", patience=3, snapshot=lambda: copy.deepcopy(model.state_dict()),
                     restore=model.load_state_dict)
    assert res.epochs_run == 5 and res.best_epoch == 2 and res.best_score == 0.9
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[2][k])


def test_an_epoch_without_the_monitored_value_counts_as_better():
    model, opt, batches, step = _setup()
    res = run_epochs(model, epochs=3, batches=batches, step=step, optimizer=opt, end_epoch=lambda ep, rec: {},
                     keep="best", monitor="val", patience=1, snapshot=lambda: None, restore=lambda s: None)
    assert res.epochs_run == 3 and res.best_epoch == 3 and res.best_score is None


def test_max_steps_stops_inside_an_epoch_and_records_it():
    model, opt, batches, step = _setup()
    res = run_epochs(model, epochs=5, batches=batches, step=step, optimizer=opt, max_steps=3)
    assert res.steps == 3 and res.epochs_run == 2 and len(res.history) == 2
    assert res.history[1]["big"] == 0.0  # the second epoch ran only its first batch (size 1)


def test_a_non_finite_loss_stops_before_the_weights_change():
    model, opt, batches, _ = _setup()
    before = copy.deepcopy(model.state_dict())

    def step(x):
        return StepOutput(model(x).sum() * float("nan"), weight=len(x))

    with pytest.raises(NonFiniteLossError, match="patch stage: non-finite training loss .* epoch 1, step 1"):
        run_epochs(model, epochs=1, batches=batches, step=step, optimizer=opt, stage="patch stage")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_settings_are_config_errors():
    model, opt, batches, step = _setup()
    with pytest.raises(ConfigError, match="epochs"):
        run_epochs(model, epochs=0, batches=batches, step=step, optimizer=opt)
    with pytest.raises(ConfigError, match="monitor"):
        run_epochs(model, epochs=1, batches=batches, step=step, optimizer=opt, keep="best")
