"""A new user's first hour (issue 23): the pieces behind the commands' messages and records,
tested without training (tests/e2e/test_first_hour.py runs the commands)."""

from pathlib import Path

import pytest
import torch

from capgen.training.callbacks import BestCheckpoint


def _saved_state(old: Path) -> dict:
    best = str(old / "epoch007-best3.041.ckpt")
    return {"dirpath": str(old), "monitor": "val/CIDEr", "best_model_score": torch.tensor(3.041),
            "best_model_path": best, "best_k_models": {best: torch.tensor(3.041)}, "kth_best_model_path": best,
            "kth_value": torch.tensor(3.041), "last_model_path": str(old / "last.ckpt")}


def test_a_new_run_from_another_runs_checkpoint_forgets_that_runs_best_file(tmp_path):
    # capgen-train ckpt_path=<finished run>/checkpoints/last.ckpt: the new folder has none of its files.
    callback = BestCheckpoint(dirpath=str(tmp_path / "new" / "checkpoints"), monitor="val/CIDEr", mode="max")
    callback.load_state_dict(_saved_state(tmp_path / "old" / "checkpoints"))
    assert callback.best_model_path == ""  # not <new>/checkpoints/epoch007-best3.041.ckpt, which was never written
    assert callback.best_model_score is None and callback.best_k_models == {}
    assert callback.kth_value == torch.tensor(float("-inf"))  # any epoch of the new run can be its best


def test_a_moved_run_keeps_its_best_file(tmp_path):
    new = tmp_path / "moved" / "checkpoints"
    new.mkdir(parents=True)
    (new / "epoch007-best3.041.ckpt").write_bytes(b"")  # the folder was moved with its files
    callback = BestCheckpoint(dirpath=str(new), monitor="val/CIDEr", mode="max")
    callback.load_state_dict(_saved_state(tmp_path / "old" / "checkpoints"))
    assert callback.best_model_path == str(new / "epoch007-best3.041.ckpt")
    assert float(callback.best_model_score) == float(torch.tensor(3.041))
    assert list(callback.best_k_models) == [str(new / "epoch007-best3.041.ckpt")]


def test_a_key_its_constructor_does_not_take_is_named_with_the_close_match():
    from omegaconf import OmegaConf

    from capgen.training.settings import UnknownSetting, check_keys

    node = OmegaConf.create({"_target_": "capgen.models.LSTMDecoder", "_partial_": True, "hiden_dim": 3,
                             "dropout": 0.1})
    with pytest.raises(UnknownSetting, match=r"^model\.decoder\.hiden_dim: .* Did you mean model\.decoder\.hidden_dim\?"):
        check_keys(node, "model.decoder")
    check_keys(OmegaConf.create({"_target_": "capgen.models.LSTMDecoder", "hidden_dim": 3}), "model.decoder")
    nested = OmegaConf.create({"_target_": "capgen.data.datamodule.CaptionDataModule",
                               "source": {"_target_": "capgen.data.shapes.ShapesSource", "sizez": {}}})
    with pytest.raises(UnknownSetting, match=r"^data\.source\.sizez: .* Did you mean data\.source\.sizes\?"):
        check_keys(nested, "data")
