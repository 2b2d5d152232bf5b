"""Recipe options in capgen-train runs: the step and plateau schedules change the learning rate
when they should, early stopping stops at the same epoch with and without a crash and resume
in between, and pretrained word vectors reach the trained model (tiny shapes runs, debug=fast:
3 steps an epoch)."""

import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from capgen.commands.train.fit import train
from capgen.vocab import Vocabulary

from helpers.runs import compose_train, scalars

STEPS = 3  # training steps per epoch under debug=fast


def _epoch_rates(logged: dict, epochs: int) -> list[float]:
    """The decoder's learning rate in each epoch (LearningRateMonitor logs it every step)."""
    [tag] = [t for t in logged if t.startswith("lr-AdamW") and not t.endswith("pg2")]
    by_step = dict(logged[tag])
    rates = [by_step[e * STEPS] for e in range(epochs)]
    assert all(by_step[s] == rates[s // STEPS] for s in range(epochs * STEPS))  # constant within an epoch
    return rates


def test_step_schedule_cuts_the_rate_every_n_epochs(make_cfg):
    cfg = make_cfg("model=lstm", "trainer.max_epochs=5", "test=false", "logger=tensorboard", "model.module.scheduler.name=step",
                   "model.module.optimizer.lr=0.002", "model.module.scheduler.step_epochs=2", "model.module.scheduler.decay=0.5")
    train(cfg)
    rates = _epoch_rates(scalars(Path(cfg.paths.output_dir)), 5)
    assert rates == pytest.approx([2e-3, 2e-3, 1e-3, 1e-3, 5e-4], rel=1e-6)


def test_plateau_schedule_cuts_the_rate_when_the_monitored_metric_stops_improving(make_cfg):
    cfg = make_cfg("model=lstm", "trainer.max_epochs=5", "test=false", "logger=tensorboard", "model.module.scheduler.name=plateau",
                   "model.module.optimizer.lr=0.002", "model.module.scheduler.patience=0", "model.module.scheduler.decay=0.5",
                   "monitor=val/BLEU-1", "monitor_mode=max")
    assert cfg.model.module.scheduler.monitor == "val/BLEU-1"  # the run's monitor, handed on by the config
    train(cfg)
    logged = scalars(Path(cfg.paths.output_dir))
    rates = _epoch_rates(logged, 5)
    values = [v for _, v in logged["val/BLEU-1"]]
    # The rule, by hand: a validation that is not better than the best so far (relative
    # threshold 1e-4, torch's default) cuts the rate (patience 0) for the next epoch.
    expected, best, rate = [2e-3], -float("inf"), 2e-3
    for value in values[:-1]:
        if value > best * (1 + 1e-4) if best > 0 else value > best:
            best = value
        else:
            rate *= 0.5
        expected.append(rate)
    assert rates == pytest.approx(expected, rel=1e-6)
    assert len(set(expected)) > 1, values  # this run did cut: the test saw both cases


# ----- early stopping across a crash and resume ----------------------------------------------
# val/loss, min, with a min_delta no epoch can reach: epoch 0 sets the best, epochs 1 and 2
# do not improve on it, so patience 2 stops the run after epoch 2 (of 6).
STOPPING = ["model=lstm", "trainer.max_epochs=6", "test=false", "logger=tensorboard", "monitor=val/loss", "monitor_mode=min",
            "callbacks.early_stopping.patience=2", "callbacks.early_stopping.min_delta=100"]


class Crash(L.Callback):
    """Raises at the start of training step `at_step`, or when training ends (at_step None)."""

    def __init__(self, at_step: int | None):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")

    def on_train_end(self, trainer, pl_module):
        if self.at_step is None:
            raise RuntimeError("simulated crash")


def _crashing(monkeypatch, at_step):
    original = L.Trainer.__init__

    def with_crash(self, *args, callbacks=(), **kw):
        original(self, *args, callbacks=[*callbacks, Crash(at_step)], **kw)

    monkeypatch.setattr(L.Trainer, "__init__", with_crash)
    return original


def _last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def _stopping_state(ckpt: dict) -> dict:
    [key] = [k for k in ckpt["callbacks"] if k.startswith("EarlyStopping")]
    return ckpt["callbacks"][key]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """The STOPPING run in one go."""
    cfg = compose_train(tmp_path_factory.mktemp("whole"), *STOPPING)
    train(cfg)
    return Path(cfg.paths.output_dir)


@pytest.mark.parametrize("at_step", [4, None], ids=["crash-in-epoch-1", "crash-after-the-stop-was-saved"])
def test_early_stopping_stops_at_the_same_epoch_with_and_without_a_crash_and_resume(stopped, make_cfg, monkeypatch, at_step):
    expected = _last(stopped)
    assert expected["global_step"] == 3 * STEPS and _stopping_state(expected)["stopped_epoch"] == 2  # stopped early

    split = make_cfg(*STOPPING, name="split")
    run = Path(split.paths.output_dir)
    original = _crashing(monkeypatch, at_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(split)
    monkeypatch.setattr(L.Trainer, "__init__", original)
    train(make_cfg(*STOPPING, f"resume={run}", name="split"))
    got = _last(run)
    assert got["global_step"] == expected["global_step"] and got["epoch"] == expected["epoch"]
    assert _stopping_state(got) == _stopping_state(expected)
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    losses = [v for _, v in scalars(run)["val/loss"]]
    assert len(losses) == 3 and losses == [v for _, v in scalars(stopped)["val/loss"]]


def test_early_stopping_is_off_by_default(make_cfg):
    cfg = make_cfg("model=lstm", "trainer.max_epochs=3", "test=false", "monitor=val/loss", "monitor_mode=min",
                   "callbacks.early_stopping.min_delta=100")  # patience stays null
    train(cfg)
    assert _last(Path(cfg.paths.output_dir))["global_step"] == 3 * STEPS


# ----- pretrained word vectors ----------------------------------------------------------------
def test_frozen_word_vectors_reach_the_trained_model_unchanged_and_are_counted(make_cfg, tmp_path, caplog):
    g = torch.Generator().manual_seed(0)
    vectors = {w: torch.randn(4, generator=g) for w in ("circle", "red", "square", "notaword")}
    glove = tmp_path / "vectors.txt"
    glove.write_text("".join(f"{w} {' '.join(f'{x:.5f}' for x in v.tolist())}\n" for w, v in vectors.items()))
    cfg = make_cfg("model=lstm", "model.decoder.embed_dim=4", "test=false", f"model.module.word_vectors={glove}",
                   "model.module.freeze_word_vectors=true")
    with caplog.at_level(logging.INFO, logger="capgen.models.word_vectors"):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    vocab = Vocabulary.load(run / "vocab.json")
    found = [w for w in vectors if w in vocab.stoi]
    assert {"circle", "red", "square"} <= set(found) and "notaword" not in found
    weights = _last(run)["state_dict"]["net.decoder.embed.weight"]
    for word in found:
        torch.testing.assert_close(weights[vocab.stoi[word]], torch.tensor([float(f"{x:.5f}") for x in vectors[word]]))
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("word vectors:")]
    assert f"word vectors: {len(found)} of {len(vocab) - 4} vocabulary words found" in line and "frozen" in line
