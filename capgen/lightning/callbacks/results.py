"""A run's results: the best epoch's metrics, and caption samples for the loggers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import numpy as np

from ...data.datamodule import Batch
from .. import compat


def best_starts_afresh(trainer: L.Trainer, monitor: str) -> bool:
    """Whether the best checkpoint by `monitor` has no score at the start of training although
    one was restored with the run: a run started from another run's checkpoint keeps none of
    that run's files (RelocatableCheckpoint), so what is best is chosen among its own epochs.
    The best epoch's metrics belong to the best checkpoint kept, and start afresh with it."""
    kept = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == monitor]
    return bool(kept) and all(c.best_model_score is None for c in kept)


class BestEpochMetrics(L.Callback):
    """Keeps the val/* metrics of the epoch with the best `monitor` (the run's result, also in
    summary.json and TensorBoard's HPARAMS tab). Saved in checkpoints, so a resumed run still
    knows the best epoch from before the resume."""

    def __init__(self, monitor: str = "val/CIDEr", mode: Literal["max", "min"] = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"monitor_mode={mode!r}: use max or min")
        self.monitor, self.mode = monitor, mode
        self.best: dict[str, float] = {}
        self.step = 0  # the step the best epoch's val/* were logged at

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run
        # before the module's, which is where the epoch's scores are logged.
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        best = self.best.get(self.monitor)
        if best is None or (score > best if self.mode == "max" else score < best):
            self.best = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            self.step = compat.logged_step(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if best_starts_afresh(trainer, self.monitor):
            self.best, self.step = {}, 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "step": self.step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.step = dict(state_dict["best"]), state_dict["step"]


class CaptionSamples(L.Callback):
    """Logs, after every validation and test, the first `num_samples` images of the split's
    first batch with their generated and reference captions (a Markdown table and a figure
    each) and, for attention models, a per-word attention figure, to every logger that shows
    them (capgen.lightning.samples). The images are the same every epoch and in every run on
    the same data, so runs can be compared image by image.

    `pictures(split, image_ids)` gives the images when batches carry cached features instead
    of pixels; capgen.commands.train.fit hands it the datamodule's."""

    def __init__(self, num_samples: int = 4) -> None:
        if num_samples < 0:
            raise ValueError(f"callbacks.caption_samples.num_samples={num_samples}: must be at least 0 (0: no samples)")
        self.num_samples = num_samples
        self.pictures: Callable[[str, list[int]], list[np.ndarray]] | None = None
        self._batches: dict[str, Batch] = {}

    def _keep(self, stage: str, batch: Batch, batch_idx: int) -> None:
        if batch_idx == 0 and self.num_samples > 0:
            self._batches[stage] = Batch(*(x[: self.num_samples] for x in batch))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._keep("val", batch, batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._keep("test", batch, batch_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test")

    def _log(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        batch = self._batches.pop(stage, None)
        if batch is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from ..samples import log_samples  # matplotlib only where figures are drawn

        log_samples(trainer, pl_module, batch, stage, self.pictures)
