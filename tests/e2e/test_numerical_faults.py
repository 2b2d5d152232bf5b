"""NaN/inf losses stop the run (keeping the last good weights) or skip the step; gradients
are clipped by default; fp16 loss scaling runs through Lightning's gradient scaler."""

import logging
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from capgen.training.callbacks import NonFiniteLossError
from capgen.training.module import CaptioningModule
from capgen.training.train import train

RUN = ["model=lstm", "trainer.max_epochs=2", "test=false"]  # 2 epochs x 3 steps


def with_callbacks(monkeypatch, *extra: L.Callback) -> None:
    original = L.Trainer.__init__

    def init(self, *args, callbacks=(), **kw):
        original(self, *args, callbacks=[*callbacks, *extra], **kw)

    monkeypatch.setattr(L.Trainer, "__init__", init)


def poison_loss(monkeypatch, at_call: int, value: float = math.nan) -> None:
    """The training loss of the at_call-th training step (1-based) becomes `value`."""
    original, calls = CaptioningModule._loss, []

    def loss(self, batch):
        total, xent = original(self, batch)
        calls.append(1)
        return (total * value, xent * value) if len(calls) == at_call else (total, xent)

    monkeypatch.setattr(CaptioningModule, "_loss", loss)


class Weights(L.Callback):
    """The weights after every optimizer step, by global step."""

    def __init__(self):
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_weights(make_cfg, monkeypatch):
    cfg = make_cfg(*RUN)
    weights = Weights()
    with_callbacks(monkeypatch, weights)
    poison_loss(monkeypatch, at_call=5)  # epoch 1, second batch: 4 good steps before it
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    kept = ckpts / "last-good-step4.ckpt"
    message = str(err.value)
    assert "training loss is nan at step 4 (epoch 1, batch 1)" in message and str(kept) in message
    assert "callbacks.finite_loss.action=skip" in message and "\n" not in message
    saved = torch.load(kept, weights_only=True)
    assert saved["global_step"] == 4
    for k, v in weights.after[4].items():  # exactly the weights of the last good step
        assert torch.equal(saved["state_dict"][k], v), k
    CaptioningModule.from_checkpoint(str(kept))  # a usable capgen checkpoint
    # Earlier checkpoints are untouched: last.ckpt is still the end of epoch 0.
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 3


def test_inf_loss_step_is_skipped_under_the_skip_setting(make_cfg, monkeypatch, caplog):
    cfg = make_cfg(*RUN, "callbacks.finite_loss.action=skip")
    weights = Weights()
    with_callbacks(monkeypatch, weights)
    poison_loss(monkeypatch, at_call=5, value=math.inf)
    with caplog.at_level(logging.WARNING, logger="capgen.training.callbacks"):
        train(cfg)
    assert "non-finite training loss (inf) at step 4 (epoch 1): step skipped (1 so far)" in caplog.text
    assert sorted(weights.after) == [1, 2, 3, 4, 5, 6]  # the run went on to its end
    for k, v in weights.after[4].items():  # weights and BatchNorm statistics
        assert torch.equal(weights.after[5][k], v), k  # the skipped step changed none of them
    assert any(not torch.equal(weights.after[6][k], v) for k, v in weights.after[5].items())  # the next one did
    assert all(torch.isfinite(v).all() for v in weights.after[6].values() if v.is_floating_point())


def test_gradients_are_clipped_to_5_by_default(make_cfg, monkeypatch):
    norms = []

    class GradNorm(L.Callback):
        def on_before_zero_grad(self, trainer, pl_module, optimizer):  # the previous step's (clipped) gradients
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            if grads:
                norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    with_callbacks(monkeypatch, GradNorm())
    poison_loss(monkeypatch, at_call=1, value=1e4)  # a huge first gradient
    train(make_cfg("model=lstm", "test=false"))
    assert norms and max(norms) <= 5.0 + 1e-3
    assert norms[0] == pytest.approx(5.0, rel=1e-3)  # the huge one was cut down to the limit


def test_fp16_loss_scaling_through_lightnings_grad_scaler(make_cfg, monkeypatch):
    """Lightning runs fp16 on CPUs as bf16, so the fp16 plugin is given explicitly: the same one
    `trainer=gpu trainer.precision=16-mixed` builds, with its GradScaler. A scale of 2^40
    overflows the fp16 gradients; the scaler must skip those steps and lower its scale, and
    the finite-loss guard must not mistake that for a bad loss (the loss itself is float32).
    model=rnn: oneDNN has no float16 LSTM kernel for CPUs (GPUs run all three models)."""
    scaler = "{_target_:torch.amp.GradScaler,device:cpu,init_scale:1.0e12}"
    plugins = ("trainer.plugins=[{_target_:capgen.training.checkpoint.AtomicCheckpointIO},"
               "{_target_:lightning.pytorch.plugins.precision.MixedPrecision,precision:16-mixed,device:cpu,"
               f"scaler:{scaler}}}]")
    cfg = make_cfg("model=rnn", "test=false", "trainer.precision=null", plugins)
    scales = []

    class Scale(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            scales.append(trainer.precision_plugin.scaler.get_scale())

    with_callbacks(monkeypatch, Scale())
    metrics = train(cfg)
    assert scales[0] < 1.0e12 and scales == sorted(scales, reverse=True)  # overflow seen, scale lowered
    assert math.isfinite(metrics["train/loss"])
