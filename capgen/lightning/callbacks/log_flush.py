"""Logged points on disk before each checkpoint."""

from __future__ import annotations

import lightning as L


class FlushLogsOnCheckpoint(L.Callback):
    """Flushes the loggers whenever a checkpoint is written.

    TensorBoard's writer buffers events for up to two minutes; a run killed meanwhile would
    lose points that lie before its last checkpoint, which the resumed run does not log
    again. Flushed here, the curve up to every checkpoint is on disk before the checkpoint.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()
