"""The demo: a reduced end-to-end run (runs in CI, ~1 min) and checks of its resume bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

from mammolens.demo import STAGES, TARGET_AUC, _State, headline_from_results


def test_state_skips_only_finished_stages_with_outputs(tmp_path: Path) -> None:
    params = {"patients": 10, "seed": 0}
    st = _State(tmp_path, params)
    out = tmp_path / "x.csv"
    out.write_text("a\n")
    st.mark("synth", 1.0, [out])
    st2 = _State(tmp_path, params)  # a rerun reads OUT/demo.json
    assert st2.done("synth") and not st2.done("ingest")
    out.unlink()  # an output removed by hand: the stage runs again
    assert not _State(tmp_path, params).done("synth")
    out.write_text("a\n")
    assert not _State(tmp_path, {"patients": 11, "seed": 0}).done("synth")  # other parameters: start over


def test_headline_from_results() -> None:
    res = {
        "primary_level": "image",
        "performance": {"image": {"auc": {"auc": 0.95, "ci_low": 0.9, "ci_high": 0.99},
                                  "metrics": {"sensitivity": {"estimate": 0.9}, "specificity": {"estimate": 0.8}},
                                  "operating_point": {"threshold": 0.4, "chosen_on": "val"}}},
        "comparison": {"levels": {"image": {"delong": {"auc_b": 0.8, "p_value": 0.01}}}},
        "reader_study": {"reader_average": {"unaided": {"auc": 0.8}, "aided": {"auc": 0.85}}, "mrmc_or": {"p_value": 0.04}},
    }
    h = headline_from_results(res)
    assert h["meets_target"] and h["target_auc"] == TARGET_AUC
    assert h["auc_baseline"] == 0.8 and h["mrmc_p"] == 0.04 and h["threshold_chosen_on"] == "val"


def test_demo_help() -> None:
    from typer.testing import CliRunner

    from mammolens.cli import app

    r = CliRunner().invoke(app, ["demo", "--help"])
    assert r.exit_code == 0 and "--patients" in r.output and "Example" in r.output


def test_reduced_demo_end_to_end_and_resume(tmp_path: Path) -> None:
    from mammolens.demo import run_demo

    out = tmp_path / "demo"
    kw = {"patients": 24, "seed": 0, "size": (128, 104), "max_epochs": 2, "n_readers": 3, "patch_pretrain": True,
          "patch_epochs": 1, "progress": False, "log": lambda m: None}
    res = run_demo(out, **kw)
    assert res.report.exists() and res.results.exists()
    r = json.loads(res.results.read_text())
    for k in ("performance", "comparison", "reader_study", "interpretability", "calibration", "model_card"):
        assert r[k], k
    assert r["performance"]["image"]["operating_point"]["chosen_on"] == "val"
    assert r["reader_study"]["n_readers"] == 3
    state = json.loads((out / "demo.json").read_text())
    assert set(state["stages"]) == set(STAGES)
    for rec in state["stages"].values():
        assert all(Path(p).exists() for p in rec["outputs"])  # every stage's output is a file
    pre = state["stages"]["pretrain"]  # the patch stage ran and the models started from its weights
    assert any(str(p).endswith(".pt") for p in pre["outputs"])
    assert json.loads(Path(next(p for p in pre["outputs"] if str(p).endswith(".pt"))).with_suffix(".json").read_text())["n_patches"] > 0
    again = run_demo(out, **kw)
    assert again.skipped == list(STAGES)  # the rerun resumes: nothing is redone
    assert again.seconds < 30


def test_second_training_process_reports_failure_with_the_stage(tmp_path: Path) -> None:
    """The baseline trains in a child process: its failure reaches the parent as a DemoError naming the model and the cause."""
    import pytest

    from mammolens.demo import DemoError, _TrainProcess

    side = _TrainProcess(kind="baseline", params={"seed": 0}, overrides={"train.seed": 0}, manifest=tmp_path / "missing.csv",
                         cache=tmp_path / "no_cache", run=tmp_path / "runs" / "baseline", config="tiny")
    try:
        with pytest.raises(DemoError, match=r"training the baseline model failed: .*missing\.csv"):
            side.wait()
    finally:
        side.stop()
    assert not (tmp_path / "runs" / "baseline.result.json").exists()
