"""The Hydra configs: every constructor argument is a setting, one `monitor` drives the
best-checkpoint choice, and the configs travel with the installed package."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from capgen.config.registry import signature_node
from capgen.data.datamodule import CaptionDataModule
from capgen.lightning.callbacks import BestEpochMetrics
from capgen.lightning.module import CaptioningModule

from helpers.runs import compose_command

DATA_CONFIGS = ("shapes", "coco2014", "flickr8k", "flickr30k", "coco_pt")


def compose_train(*overrides: str):
    return compose_command("train", *overrides)


def arguments(cls, skip: tuple[str, ...]) -> set[str]:
    return {n for n in inspect.signature(cls.__init__).parameters if n not in ("self", *skip)}


@pytest.mark.parametrize("model", ["rnn", "lstm", "attn", "transformer"])
def test_every_module_argument_is_a_setting_that_overrides_without_plus(model):
    cfg = compose_train(f"model={model}")
    assert set(cfg.model.module) - {"_target_"} == arguments(CaptioningModule, ("net", "vocab", "net_config"))
    changed = compose_train(f"model={model}", "model.module.test.decode.length_penalty=0.7",
                            "model.module.test.decode.beam_size=5", "model.module.val.metrics=[BLEU]")
    assert (changed.model.module.test.decode.length_penalty, changed.model.module.test.decode.beam_size) == (0.7, 5)
    assert list(changed.model.module.val.metrics) == ["BLEU"]
    # The YAML states only what differs: the rest are the constructor's own defaults.
    defaults = signature_node(CaptioningModule, ("net", "vocab", "net_config"))
    assert cfg.model.module.optimizer.lr == defaults["optimizer"]["lr"]
    assert cfg.model.module.scheduler.warmup_steps == defaults["scheduler"]["warmup_steps"]
    assert cfg.model.module.objective.scst.samples == defaults["objective"]["scst"]["samples"]


def test_the_module_takes_few_arguments_its_settings_in_groups():
    """The network, the vocabulary and its config, and settings grouped by what they configure."""
    assert arguments(CaptioningModule, ()) == {"net", "vocab", "net_config", "optimizer", "scheduler", "objective", "val",
                                               "test", "tokenizer", "word_vectors", "freeze_word_vectors"}
    assert len(arguments(CaptioningModule, ())) <= 12


@pytest.mark.parametrize("data", DATA_CONFIGS)
def test_every_datamodule_argument_is_a_setting(data):
    cfg = compose_train(f"data={data}", "data.eval_batch_size=7")
    assert set(cfg.data) - {"_target_", "source"} == arguments(CaptionDataModule, ("source", "vocab", "encoder", "encoder_weights",
                                                                                "prepare_args"))
    assert cfg.data.eval_batch_size == 7 and cfg.data.seed == cfg.seed


@pytest.mark.parametrize("name, typo", [
    ("train", "trainer.max_epoch=3"), ("train", "model.decoder.hiden_dim=3"), ("train", "model.module.lenght_penalty=0.7"),
    ("train", "model.module.objective.scst.samplez=3"), ("train", "modle=rnn"), ("eval", "beam_sise=3"), ("eval", "decode.beamsize=4"), ("caption", "imagess=x"),
])  # fmt: skip
def test_config_typos_fail_in_every_command(name, typo):
    """A misspelt setting or group stops composition naming it (settings are not silently added)."""
    with pytest.raises(ConfigCompositionException, match=typo.split("=")[0].replace(".", r"\.")):
        compose_command(name, typo)


def test_one_monitor_setting_drives_checkpoint_best_epoch_and_its_direction():
    cfg = compose_train("monitor=val/loss", "monitor_mode=min", "paths.output_dir=/tmp/unused")
    checkpoint = cfg.callbacks.model_checkpoint
    assert (checkpoint.monitor, checkpoint.mode) == ("val/loss", "min")
    assert checkpoint.filename == "epoch{epoch:03d}-best{val/loss:.3f}"
    best = instantiate(cfg.callbacks.best_epoch)
    assert isinstance(best, BestEpochMetrics) and (best.monitor, best.mode) == ("val/loss", "min")


def test_best_epoch_metrics_follow_the_monitor_direction():
    best = BestEpochMetrics(monitor="val/loss", mode="min")

    class Trainer:
        sanity_checking = False
        callback_metrics: dict = {}
        fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=0))

    import torch

    for loss in (0.9, 0.5, 0.7):
        Trainer.callback_metrics = {"val/loss": torch.tensor(loss), "val/CIDEr": torch.tensor(1 - loss)}
        best.on_validation_end(Trainer, None)
    assert best.best["val/loss"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="monitor_mode='up'"):
        BestEpochMetrics(mode="up")
