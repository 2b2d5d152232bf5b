"""How the encoder's BatchNorm layers learn their statistics while training."""

from __future__ import annotations

from typing import Literal

import lightning as L
from torch import nn

from .. import compat


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
        if compat.syncs_batchnorm(trainer) and trainer.world_size > 1 and trainer.strategy.root_device.type == "cpu":
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
