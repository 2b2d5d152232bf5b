"""Training callbacks for reliability: exact resume, non-finite losses, BatchNorm under DDP.

All three are in conf/callbacks/default.yaml, so every capgen-train run has them.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


class RandomState(L.Callback):
    """Saves the random number generators in every checkpoint and restores them on resume.

    Lightning restores weights, optimizer, scheduler, loop counters and the checkpoint
    callbacks' best-so-far, but not the generators, so dropout would draw other masks after a
    resume. The states are taken when a checkpoint is written and put back right before the
    first training batch after resuming: nothing between those two moments in an
    uninterrupted run draws from them (the training DataLoader has its own generator, and
    validation decodes greedily in eval mode), so the resumed run continues the same stream.
    Under DDP the checkpoint holds rank 0's states and every rank restarts from them, as
    every rank starts from the same seed.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # Tensors and plain numbers only, so that checkpoints still load with weights_only=True.
        numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
        state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (see FiniteLossGuard)."""


class FiniteLossGuard(L.Callback):
    """Stops (action="stop", the default) or skips (action="skip") a step whose loss is NaN/inf.

    The check runs before the backward pass, so the weights are still those of the last good
    step. "stop" saves them with the optimizer state to `<checkpoints>/last-good-step<N>.ckpt`
    and raises NonFiniteLossError naming the step, that file and what to change; last.ckpt
    and the best checkpoint are left as they were. "skip" lets the backward pass run but
    drops every gradient before the optimizer step, so neither the weights nor the
    optimizer's moments change (the learning-rate schedule still advances), and logs a
    warning per skipped step. Under DDP the ranks agree first (any rank's bad loss counts for
    all), so they stop or skip together instead of hanging.

    Under fp16 mixed precision Lightning's gradient scaler handles overflowing *gradients*
    itself (it skips that step and lowers the scale); the loss is computed in float32, so an
    overflow there does not trip this guard.
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop"):
        if action not in ("stop", "skip"):
            raise ValueError(f"callbacks.finite_loss.action={action!r}: use stop or skip")
        self.action = action
        self.skipped = 0
        self._drop_gradients = False

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        step, epoch = trainer.global_step, trainer.current_epoch
        if self.action == "skip":
            self._drop_gradients = True
            self.skipped += 1
            log.warning("non-finite training loss (%s) at step %d (epoch %d): step skipped (%d so far)",
                        loss.item(), step, epoch, self.skipped)
            return
        folder = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else Path(trainer.default_root_dir)
        kept = folder / f"last-good-step{step}.ckpt"
        trainer.save_checkpoint(kept)
        raise NonFiniteLossError(
            f"the training loss is {loss.item()} at step {step} (epoch {epoch}, batch "
            f"{trainer.fit_loop.epoch_loop.batch_idx}); the run stopped before this step changed any weight. The "
            f"weights and optimizer state of the last good step are in {kept}; the checkpoints written before it "
            "are unchanged. Usual fixes: a lower model.module.lr, gradient clipping (trainer.gradient_clip_val, 5 "
            "by default), trainer.precision=32-true instead of 16-mixed; or skip such steps with "
            "callbacks.finite_loss.action=skip."
        )

    def on_before_optimizer_step(self, trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self._drop_gradients:
            for p in pl_module.parameters():
                p.grad = None  # optimizers leave parameters without a gradient untouched
            self._drop_gradients = False


class BatchNormPolicy(L.Callback):
    """How the encoder's BatchNorm layers learn their statistics.

    mode="batch" (default): normalise by the batch and update the running statistics. With
    several processes each normalises by its own share of the batch, unless
    `trainer.sync_batchnorm=true` (the `ddp` trainer config) turns them into SyncBatchNorm,
    which torch implements for GPUs only; on CPU processes (`trainer=ddp_cpu`) that is refused
    at start-up. mode="frozen": BatchNorm layers stay in eval mode while training, so they
    normalise with their stored running statistics and never update them (the usual choice
    for fine-tuning a pretrained encoder with small per-process batches); their scale and
    shift still train.
    """

    def __init__(self, mode: Literal["batch", "frozen"] = "batch"):
        if mode not in ("batch", "frozen"):
            raise ValueError(f"callbacks.batchnorm.mode={mode!r}: use batch or frozen")
        self.mode = mode

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        sync = getattr(trainer.strategy, "_layer_sync", None) is not None
        if sync and trainer.world_size > 1 and trainer.strategy.root_device.type == "cpu":
            raise ValueError(
                "trainer.sync_batchnorm=true with processes on the CPU: torch's SyncBatchNorm runs on GPUs only. "
                "Set trainer.sync_batchnorm=false and either keep per-process statistics "
                "(callbacks.batchnorm.mode=batch) or freeze them (callbacks.batchnorm.mode=frozen)."
            )

    def on_train_batch_start(self, trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # Lightning switches the whole model to train mode at each epoch start and after
        # every validation; putting the layers back per batch keeps them frozen throughout.
        if self.mode == "frozen":
            for m in pl_module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
