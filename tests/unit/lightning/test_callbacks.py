"""capgen's callbacks, without training: the best epoch's metrics, the best checkpoint's state, the
epoch line and the progress bar."""

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from capgen.lightning.callbacks import BestCheckpoint, BestEpochMetrics

from helpers.fakes import fake_trainer


def test_best_epoch_metrics_keep_the_best_val_cider_epoch_and_survive_a_resume():
    callback = BestEpochMetrics()
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={})
    for step, (cider, bleu) in zip((10, 20, 30), [(0.2, 0.1), (0.5, 0.3), (0.4, 0.4)]):
        trainer.callback_metrics = {"val/CIDEr": torch.tensor(cider), "val/BLEU-4": torch.tensor(bleu),
                                    "train/loss": torch.tensor(1.0)}
        # the step Lightning logs the epoch's val/* at (compat.logged_step)
        trainer.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=step))
        callback.on_validation_end(trainer, None)
    assert callback.best == pytest.approx({"val/CIDEr": 0.5, "val/BLEU-4": 0.3})  # not the last epoch's
    assert callback.step == 20  # where TensorBoard's HPARAMS session puts the best epoch's points

    resumed = BestEpochMetrics()
    resumed.load_state_dict(callback.state_dict())
    trainer.callback_metrics = {"val/CIDEr": torch.tensor(0.45), "val/BLEU-4": torch.tensor(0.5)}
    resumed.on_validation_end(trainer, None)
    assert resumed.best == pytest.approx({"val/CIDEr": 0.5, "val/BLEU-4": 0.3}) and resumed.step == 20

    trainer.sanity_checking = True  # the sanity check's scores are not an epoch's
    trainer.callback_metrics = {"val/CIDEr": torch.tensor(9.0)}
    resumed.on_validation_end(trainer, None)
    assert resumed.best["val/CIDEr"] == pytest.approx(0.5)


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


def test_one_line_per_validation_epoch_with_the_best_so_far(caplog):
    from capgen.lightning.callbacks import EpochLine

    line = EpochLine()
    with caplog.at_level(logging.INFO, logger="capgen.lightning.callbacks"):
        line.on_validation_end(fake_trainer(0, val_CIDEr=0.5, val_loss=3.0, **{"val/BLEU-4": 0.1}), None)
        line.on_validation_end(fake_trainer(1, val_CIDEr=0.25, val_loss=2.5, **{"val/BLEU-4": 0.2}), None)
    said = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"epoch 0: val/CIDEr 0\.500, val/BLEU-4 0\.100, val/loss 3\.000; best val/CIDEr 0\.500 "
                        r"\(epoch 0\); \d+ s", said[0]), said
    assert said[1].startswith("epoch 1: val/CIDEr 0.250, val/BLEU-4 0.200, val/loss 2.500; best val/CIDEr 0.500 (epoch 0)")
    restored = EpochLine()
    restored.load_state_dict(line.state_dict())  # a resumed run goes on from the best so far
    assert restored.best == (0.5, 0)


def test_the_progress_bar_shows_no_version_fragment():
    from capgen.lightning.callbacks import progress_bar

    logger = SimpleNamespace(version="default", name="tb")
    trainer = SimpleNamespace(loggers=[logger], progress_bar_metrics={"train/loss": 3.5})
    assert progress_bar().get_metrics(trainer, None) == {"train/loss": 3.5}  # no v_num=ault
