"""The run folder / checkpoint format (mammolens.run_folder): written by write_untrained_run
and training, read by predict."""

from __future__ import annotations

import pytest
import torch

from mammolens.errors import CheckpointError
from mammolens.run_folder import (
    CKPT_DIR,
    LAST,
    META_FILE,
    checkpoint_payload,
    read_checkpoint,
    read_meta,
    resolve_checkpoint,
    write_meta,
)


def test_untrained_run_round_trips(tmp_path):
    from mammolens.predict import load_predictor
    from mammolens.serve.scoring import write_untrained_run

    run = write_untrained_run(tmp_path / "run", image_size=(64, 32))
    assert resolve_checkpoint(run) == run / CKPT_DIR / LAST
    ck = read_checkpoint(run)
    assert ck.meta["untrained"] and ck.meta == read_meta(run)
    assert isinstance(ck.config.get("model"), dict)
    assert ck.model_state and not any(k.startswith("model.") for k in ck.model_state)
    pred = load_predictor(run)
    assert pred.image_size == (64, 32)


def test_metadata_from_meta_json_when_the_checkpoint_has_none(tmp_path):
    run = tmp_path / "r"
    (run / CKPT_DIR).mkdir(parents=True)
    torch.save(checkpoint_payload({"w": torch.zeros(1)}, {"model": {}}, {}), run / CKPT_DIR / LAST)
    write_meta(run, {"model": "x"})
    ck = read_checkpoint(run / CKPT_DIR / LAST)
    assert ck.meta == {"model": "x"} and list(ck.model_state) == ["w"]


@pytest.mark.parametrize("payload, match", [
    ({"no": "state"}, "no 'state_dict'"),
    ({"state_dict": {}}, "no mammolens configuration"),
])
def test_foreign_checkpoints_are_named(tmp_path, payload, match):
    p = tmp_path / "x.ckpt"
    torch.save(payload, p)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(p)
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.ckpt: not a readable"):
        read_checkpoint(tmp_path / "junk.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in this run folder"):
        resolve_checkpoint(tmp_path / "empty")
    assert read_meta(tmp_path) == {} and not (tmp_path / META_FILE).exists()
