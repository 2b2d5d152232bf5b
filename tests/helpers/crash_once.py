"""A callback that crashes a capgen-train process once, for resume tests run as real commands.

Added with `+callbacks.crash._target_=helpers.crash_once.CrashOnce +callbacks.crash.at_step=N
+callbacks.crash.marker=<file>` (tests/ on PYTHONPATH). Each process (DDP rank) raises when
step N is about to start and leaves <file>.<rank> behind; a resumed run, which repeats the
run's overrides and so this callback too, finds the marker and goes on.
"""

from pathlib import Path

import lightning as L


class CrashOnce(L.Callback):
    def __init__(self, at_step: int, marker: str):
        self.at_step, self.marker = at_step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        marker = Path(f"{self.marker}.{trainer.global_rank}")
        if trainer.global_step == self.at_step and not marker.exists():
            marker.touch()
            raise RuntimeError(f"simulated crash at step {self.at_step} on rank {trainer.global_rank}")
