"""Localisation is scored once (stats.localization.score_localization, original geometry):
``evaluate`` and ``mammolens stats localization`` give the same numbers on the same inputs."""

from __future__ import annotations

import importlib
import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from mammolens.cli import app
from mammolens.data.manifest import read_manifest


def test_evaluate_and_stats_localization_agree(tmp_path, make_eval_cohort) -> None:
    ev = importlib.import_module("mammolens.evaluate.inputs")
    loc = importlib.import_module("mammolens.evaluate.sections.interpretability")
    f = make_eval_cohort(tmp_path, n_patients=30, seed=1)
    preds, _ = ev.load_predictions(f["predictions"])
    joined, _ = ev.join_predictions(preds, read_manifest(f["manifest"]), source="t")
    joined["heatmap"] = [str(tmp_path / p) if p else "" for p in joined["heatmap"]]
    section, table = loc.localisation_section(joined, kind="localization", base_dir=tmp_path)
    assert section["geometry"] == "original" and section["n_images"] > 5

    r = CliRunner().invoke(app, ["stats", "localization", str(f["predictions"]), "--manifest", str(f["manifest"]),
                                 "--kind", "localization", "--json"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    cli = json.loads(r.stdout)
    assert cli["n_images"] == section["n_images"]
    assert cli["hit_rate"] == pytest.approx(section["hit_rate"]["value"])
    assert cli["dice_mean"] == pytest.approx(section["dice"]["mean"])
    assert cli["dice_median"] == pytest.approx(section["dice"]["median"])
    assert cli["iou_mean"] == pytest.approx(section["iou_mean"])
    assert cli["froc"]["cpm"] == pytest.approx(section["froc"]["cpm"])
    per_image = pd.DataFrame(cli["per_image"]).set_index("image_id")
    t = table.set_index("image_id")
    assert per_image.loc[t.index, "dice"].tolist() == pytest.approx(t["dice"].tolist())
    assert os.path.isabs(joined["heatmap"].iloc[0])
