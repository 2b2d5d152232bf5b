"""Early stopping on the run's monitored metric (conf/callbacks/default.yaml: early_stopping)."""

from __future__ import annotations

import logging
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

log = logging.getLogger(__name__)


class EarlyStopping(LightningEarlyStopping):
    """Lightning's EarlyStopping on the run's `monitor` and `monitor_mode`, off unless given a patience.

    patience: validations in a row without an improvement larger than min_delta after which
    the run stops (null: never; the default, so runs train their max_epochs). The count is
    checked after each validation and the best score, the count and the decision are saved
    in every checkpoint (Lightning writes the checkpoints after this callback has counted),
    so a run resumed with `resume=` stops at the epoch an uninterrupted one would: also when
    it was interrupted after the decision was saved but before it ended, in which case it
    ends at once.
    """

    def __init__(self, monitor: str = "val/CIDEr", mode: Literal["max", "min"] = "max", patience: int | None = None,
                 min_delta: float = 0.0):
        if patience is not None and patience < 1:
            raise ValueError(f"callbacks.early_stopping.patience={patience}: must be at least 1 (validations without "
                             "improvement before the run stops), or null to never stop early")
        if min_delta < 0:
            raise ValueError(f"callbacks.early_stopping.min_delta={min_delta}: must be at least 0 (the improvement that "
                             "counts), e.g. 0.0")
        if mode not in ("max", "min"):
            raise ValueError(f"callbacks.early_stopping.mode={mode!r}: must be max or min (it follows monitor_mode)")
        super().__init__(monitor=monitor, mode=mode, patience=patience or 0, min_delta=min_delta, verbose=True)
        self.enabled = patience is not None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and self.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
            log.info("resumed after early stopping decided to stop at epoch %d (%s): training ends here",
                     self.stopped_epoch, self.stopping_reason_message)
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            super().on_validation_end(trainer, pl_module)
