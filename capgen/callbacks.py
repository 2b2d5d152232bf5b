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

from .data.resumable import ResumableLoader

log = logging.getLogger(__name__)


def _random_state() -> dict[str, Any]:
    """This process's generators, as tensors and plain numbers only (so that checkpoints
    still load with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_random_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


class ExactResume(L.Callback):
    """Saves what Lightning does not restore exactly, and puts it back on resume.

    Lightning restores weights, optimizer, scheduler, loop counters and the checkpoint
    callbacks' best-so-far. Two more things decide what an uninterrupted run does next:

    - the random generators (dropout masks). They are taken when a checkpoint is written and
      put back right before the first training batch after resuming: nothing between those
      two moments in an uninterrupted run draws from them (the training DataLoader has its
      own generator; validation decodes greedily in eval mode), so the stream continues.
      Under DDP every rank keeps its own: the ranks start from one seed, but their batches
      differ in length, so their dropout draws, and hence their generators, part ways. The
      checkpoint holds one state per rank (gathered when it is written, which every rank
      does) and each rank takes back its own.
    - where the training loader stood in its epoch, for checkpoints written mid-epoch
      (capgen.data.resumable.ResumableLoader). Lightning hands a loader its saved state only
      if the loader exists after the checkpoint is restored, which a learning-rate schedule
      sized by `estimated_stepping_batches` prevents; the state is therefore given to the
      loader here, at the start of training, before its first batch is drawn.
    """

    KEY = "capgen_exact_resume"

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        states = [_random_state()]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, _random_state())  # rank r's at index r
        loader = trainer.train_dataloader
        checkpoint[self.KEY] = {"rng": states, "train_loader": loader.state_dict() if isinstance(loader, ResumableLoader) else None}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(self.KEY)  # None: a checkpoint from before this callback
        if self._pending is None:
            return
        states = self._pending["rng"]
        if isinstance(states, dict):  # written before states were kept per rank: rank 0's only
            states = [states]
        if len(states) != trainer.world_size:
            log.warning("resuming on %d processes from a checkpoint written by %d: each process's data shard and "
                        "random stream differ from the interrupted run's, so the run continues but not exactly "
                        "as it would have", trainer.world_size, len(states))
        self._pending["rng"] = states[trainer.global_rank % len(states)]

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        if self._pending and self._pending["train_loader"] and isinstance(loader, ResumableLoader):
            loader.load_state_dict(self._pending["train_loader"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending is None:
            return
        rng, self._pending = self._pending["rng"], None
        _set_random_state(rng)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (see FiniteLossGuard)."""


class FiniteLossGuard(L.Callback):
    """Stops (action="stop", the default) or skips (action="skip") a step whose loss is NaN/inf.

    The check runs before the backward pass, so the weights are still those of the last good
    step (BatchNorm statistics, which the bad forward pass moved, are put back too). "stop" saves them with the optimizer state to `<checkpoints>/last-good-step<N>.ckpt`
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
        self._buffers: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # The forward pass updates BatchNorm's running statistics before the loss is known;
        # kept here (a few small tensors) so a bad batch leaves no trace in them either.
        self._buffers = {name: b.detach().clone() for name, b in pl_module.named_buffers()}

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        step, epoch = trainer.global_step, trainer.current_epoch
        if self.action == "skip":
            self._drop_gradients = True  # and the statistics restored, once backward no longer needs them
            self.skipped += 1
            log.warning("non-finite training loss (%s) at step %d (epoch %d): step skipped (%d so far)",
                        loss.item(), step, epoch, self.skipped)
            return
        self._restore_buffers(pl_module)
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
            self._restore_buffers(pl_module)
            self._drop_gradients = False

    def _restore_buffers(self, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            for name, b in pl_module.named_buffers():
                b.copy_(self._buffers[name])


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
        # Lightning keeps Trainer(sync_batchnorm=True) as the strategy's layer-sync plugin.
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


class FlushLogsOnCheckpoint(L.Callback):
    """Flushes the loggers whenever a checkpoint is written.

    TensorBoard's writer buffers events for up to two minutes; a run killed meanwhile would
    lose points that lie before its last checkpoint, which the resumed run does not log
    again. Flushed here, the curve up to every checkpoint is on disk before the checkpoint.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()
