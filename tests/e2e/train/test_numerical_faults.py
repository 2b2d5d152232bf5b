"""NaN/inf losses, and updates that make the weights NaN/inf, stop the run (keeping the last
good weights) or skip the step; gradients are clipped by default; fp16 loss scaling runs
through Lightning's gradient scaler."""

import logging
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from capgen.commands.train.fit import train
from capgen.lightning.callbacks import NonFiniteLossError, NonFiniteWeightsError
from capgen.lightning.module import CaptioningModule

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
    """The weights (and the optimizer's state tensors) at the start and after every optimizer
    step, by global step."""

    def __init__(self):
        self.after: dict[int, dict[str, torch.Tensor]] = {}
        self.optimizer: dict[int, dict[tuple[int, str], torch.Tensor]] = {}

    def on_train_start(self, trainer, pl_module):
        self.on_train_batch_end(trainer, pl_module, None, None, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.optimizer[trainer.global_step] = optimizer_tensors(trainer.optimizers[0].state_dict())


def optimizer_tensors(state_dict: dict) -> dict[tuple[int, str], torch.Tensor]:
    return {(p, k): v.clone() for p, s in state_dict["state"].items() for k, v in s.items() if torch.is_tensor(v)}


class NanLearningRate(L.Callback):
    """The learning rate of the optimizer step at `step` (0-based) is NaN; the schedule sets it
    again for the next one."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.step:
            for group in optimizer.param_groups:
                group["lr"] = math.nan


def all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in tensors if v.is_floating_point())


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


def test_nan_first_update_stops_keeping_finite_weights(make_cfg, monkeypatch):
    """The update, not the loss, goes bad first (a NaN learning rate at the first optimizer
    step): the step is undone before it is counted, so the saved file holds the weights the
    run started with."""
    cfg = make_cfg(*RUN)
    weights = Weights()
    with_callbacks(monkeypatch, weights, NanLearningRate(step=0))
    with pytest.raises(NonFiniteWeightsError) as err:
        train(cfg)
    kept = Path(cfg.paths.output_dir) / "checkpoints" / "last-good-step0.ckpt"
    message = str(err.value)
    assert "optimizer step 0 (epoch 0, batch 0) made the weights or the optimizer state NaN/inf" in message
    assert str(kept) in message and "set a finite model.module.optimizer.lr" in message and "\n" not in message
    saved = torch.load(kept, weights_only=True)
    assert saved["global_step"] == 0 and all_finite(saved["state_dict"].values())
    for k, v in weights.after[0].items():
        assert torch.equal(saved["state_dict"][k], v), k
    assert saved["optimizer_states"][0]["state"] == {}  # as before the first step
    CaptioningModule.from_checkpoint(str(kept))


def test_update_that_turns_nan_mid_run_keeps_the_weights_and_optimizer_state_before_it(make_cfg, monkeypatch):
    cfg = make_cfg(*RUN)
    weights = Weights()
    with_callbacks(monkeypatch, weights, NanLearningRate(step=4))  # epoch 1, second batch
    with pytest.raises(NonFiniteWeightsError) as err:
        train(cfg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    kept = ckpts / "last-good-step4.ckpt"
    assert "optimizer step 4 (epoch 1, batch 1)" in str(err.value) and str(kept) in str(err.value)
    saved = torch.load(kept, weights_only=True)
    assert saved["global_step"] == 4
    for k, v in weights.after[4].items():  # the weights and BatchNorm statistics after step 4
        assert torch.equal(saved["state_dict"][k], v), k
    state = optimizer_tensors(saved["optimizer_states"][0])
    assert state.keys() == weights.optimizer[4].keys() and all_finite(state.values())
    for k, v in weights.optimizer[4].items():  # Adam's moments and step counts before the bad step
        assert torch.equal(state[k], v), k
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 3


def test_update_that_turns_nan_is_undone_under_the_skip_setting(make_cfg, monkeypatch, caplog):
    cfg = make_cfg(*RUN, "callbacks.finite_loss.action=skip")
    weights = Weights()
    with_callbacks(monkeypatch, weights, NanLearningRate(step=4))
    with caplog.at_level(logging.WARNING, logger="capgen.lightning.callbacks"):
        train(cfg)
    assert "non-finite weights or optimizer state after the update (learning rates [nan" in caplog.text
    assert "at step 4 (epoch 1): step skipped (1 so far)" in caplog.text
    assert sorted(weights.after) == [0, 1, 2, 3, 4, 5, 6]
    for k, v in weights.after[4].items():
        assert torch.equal(weights.after[5][k], v), k  # the undone step changed nothing
    for k, v in weights.optimizer[4].items():
        assert torch.equal(weights.optimizer[5][k], v), k
    assert any(not torch.equal(weights.after[6][k], v) for k, v in weights.after[5].items())  # the next one did
    assert all_finite(weights.after[6].values())


def test_training_from_non_finite_weights_is_refused(make_cfg, monkeypatch, tmp_path):
    """A checkpoint holding NaN weights (e.g. one written before this guard) has no good state
    to fall back on: the run stops before its first step instead of saving it as the last good one."""
    first = make_cfg("model=lstm", "trainer.max_epochs=1", "test=false", name="first")
    train(first)
    ckpt = torch.load(Path(first.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    weight = ckpt["state_dict"][name]  # a convolution's may be stored channels_last: index it, not view(-1)
    weight[(0,) * weight.dim()] = math.nan
    poisoned = tmp_path / "poisoned.ckpt"
    torch.save(ckpt, poisoned)
    with pytest.raises(NonFiniteWeightsError, match="already NaN/inf when training starts") as err:
        train(make_cfg(*RUN, f"ckpt_path={poisoned}", name="second"))
    assert str(poisoned) in str(err.value)


def test_inf_loss_step_is_skipped_under_the_skip_setting(make_cfg, monkeypatch, caplog):
    cfg = make_cfg(*RUN, "callbacks.finite_loss.action=skip")
    weights = Weights()
    with_callbacks(monkeypatch, weights)
    poison_loss(monkeypatch, at_call=5, value=math.inf)
    with caplog.at_level(logging.WARNING, logger="capgen.lightning.callbacks"):
        train(cfg)
    assert "non-finite training loss (inf) at step 4 (epoch 1): step skipped (1 so far)" in caplog.text
    assert sorted(weights.after) == [0, 1, 2, 3, 4, 5, 6]  # the run went on to its end
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
    plugins = ("trainer.plugins=[{_target_:capgen.lightning.checkpoint_io.AtomicCheckpointIO},"
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
