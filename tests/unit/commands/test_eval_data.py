"""The data a checkpoint copied out of its run folder is scored on (capgen.commands.eval.data):
the data config it records it trained with, data.* given on top; other split settings than the
recorded ones are refused, as they would put training images in the split it is scored on."""

import logging

import pytest

from capgen.commands.eval.data import eval_data_config
from capgen.runs.provenance import record, trained_on

from helpers.runs import compose_command

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def recorded(root, fractions=FRACTIONS):
    """What a checkpoint trained with data=custom at `root` records (capgen.runs.provenance)."""
    config = {"_target_": "capgen.data.datamodule.CaptionDataModule", "root": str(root), "batch_size": 8,
              "source": {"_target_": "capgen.data.custom.CustomSource", "_partial_": True, "captions": "captions.csv",
                         "image_dir": None, "split_fractions": fractions, "split_seed": 0, "image_size": 32}}
    return trained_on({"training_data": record("custom", "capgen.data.custom.CustomSource", 32, config)})


def data(trained, *given):
    cfg = compose_command("eval", "ckpt_path=a.ckpt", *given)
    return eval_data_config(cfg, list(given), None, None, trained.image_size, trained.data, trained)


def test_a_lone_checkpoint_is_scored_on_the_data_it_records_when_no_data_setting_is_given(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="capgen.commands.eval.data"):
        used = data(recorded(tmp_path))
    assert used.root == str(tmp_path) and used.source.split_fractions == FRACTIONS and used.source.image_size == 32
    (line,) = [r.getMessage() for r in caplog.records if "records it was trained with" in r.getMessage()]
    assert f"data.root={tmp_path}" in line and "split_fractions={train:0.6,val:0.2,test:0.2}" in line
    # data.* given (the data moved) go on top of the recorded settings, which keep its splits.
    moved = data(recorded(tmp_path / "gone"), f"data.root={tmp_path}", "data.batch_size=2")
    assert moved.root == str(tmp_path) and moved.batch_size == 2 and moved.source.split_fractions == FRACTIONS
    assert data(recorded(tmp_path), "data=custom", "data.source.split_seed=0").source.split_fractions == FRACTIONS


@pytest.mark.parametrize("given, named", [
    (["data=custom", "data.source.split_fractions={train:0.2,val:0.2,test:0.6}"],
     "give data.source.split_fractions={train:0.2,val:0.2,test:0.6}"),
    # capgen-eval adds the recorded data=custom before Hydra, given data.* alone (with_run_data_choice).
    (["data=custom", "data.source.split_seed=3"], "give data.source.split_seed=3"),
])
def test_a_lone_checkpoint_given_other_split_settings_than_it_records_is_refused_naming_both(tmp_path, given, named):
    with pytest.raises(ValueError) as refused:
        data(recorded(tmp_path), *given)
    message = str(refused.value)
    assert message.startswith("ckpt_path=a.ckpt: it was trained on the splits that data.source.split_fractions="
                              "{train:0.6,val:0.2,test:0.2} and data.source.split_seed=0 draw"), message
    assert named in message and "the test split would hold images the model was trained on" in message
    assert "\n" not in message


def test_a_lone_checkpoint_whose_recorded_data_is_gone_names_the_setting_to_give(tmp_path):
    with pytest.raises(ValueError, match=rf"^ckpt_path=a\.ckpt: .* \(data=custom, data\.root={tmp_path / 'gone'}\) is not "
                                         r"there any more\. Give where that data is now: capgen-eval ckpt_path=a\.ckpt "
                                         r"data\.root=<its folder>"):
        data(recorded(tmp_path / "gone"))


def test_other_data_is_scored_on_its_own_splits(tmp_path):
    """data=<another config> is other data: composed as for a checkpoint that records nothing."""
    assert data(recorded(tmp_path), "data=shapes").source._target_.endswith("ShapesSource")
