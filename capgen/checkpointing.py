"""Checkpoint files that survive a kill, and that say which capgen wrote them.

`AtomicCheckpointIO` is the trainer's checkpoint writer (conf/trainer/cpu.yaml, inherited by
every trainer config). A process killed at any moment, even half-way through writing
`last.ckpt`, leaves the previous complete `last.ckpt` in place: the bytes go to
`<name>.tmp`, are flushed to disk (fsync), and only then renamed over the final name
(`os.replace` is atomic on POSIX and Windows); the folder is fsynced so the rename itself
survives a power cut. A stale `<name>.tmp` from a killed write is overwritten by the next save.

`LastCheckpoint` writes last.ckpt so that a resumed run misses no validation (see its docstring).

`stamp` / `check_format` put a format number and the capgen version into every checkpoint
(CaptioningModule.on_save_checkpoint) and refuse, with a message that names the file and the
fix, checkpoints that this capgen cannot read.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.plugins.io import TorchCheckpointIO

from . import __version__

# The layout of a capgen checkpoint: Lightning's keys plus "vocab" and hyper_parameters with
# "net_config". Raise it when that layout changes so that older code refuses newer files.
# Checkpoints written before the number existed have this same layout (format 1).
CHECKPOINT_FORMAT = 1
FORMAT_KEY = "capgen"


def stamp(checkpoint: dict[str, Any]) -> None:
    checkpoint[FORMAT_KEY] = {"format": CHECKPOINT_FORMAT, "version": __version__}


def check_format(checkpoint: dict[str, Any], path: str | os.PathLike, setting: str = "ckpt_path") -> None:
    """Raise ValueError when `checkpoint` (read from `path`) is not one this capgen can use."""
    info = checkpoint.get(FORMAT_KEY, {"format": 1, "version": "0.1.0 or older"})
    info = info if isinstance(info, dict) else {}
    fmt, version = info.get("format"), info.get("version", "unknown")
    if isinstance(fmt, int) and 1 <= fmt <= CHECKPOINT_FORMAT:
        return
    raise ValueError(
        f"{setting}={path}: this checkpoint was written by capgen {version} in checkpoint format {fmt!r}, "
        f"but this capgen ({__version__}) reads format {CHECKPOINT_FORMAT}. Use the capgen version that wrote "
        "it (pip install capgen==<that version>) to evaluate or resume it, or train a new run with this one."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local writes are all-or-nothing (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote stores: fsspec's own transaction
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise first: a failure here touches no file
        write_atomically(Path(path), buffer.getbuffer())


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` so that `path` holds either its old content or all of `data`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); Windows cannot open folders and needs none."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LastCheckpoint(ModelCheckpoint):
    """last.ckpt, the checkpoint a run resumes from (conf/callbacks/default.yaml).

    Written at epoch ends, after validation, or every N optimizer steps
    (`every_n_train_steps=N`). In the step mode a save can fall on the last step before a
    validation (an epoch's last step), and Lightning then skips the save after that
    validation, as it already saved at that step. A run resumed from that file would start
    after the validation without having run it: that epoch's val scores, and its place in
    the best-checkpoint tracker, would be missing. So once a validation is settled at a step
    that was saved, last.ckpt is written again, now holding its results. "Settled" is when
    the best checkpoint is saved too (Lightning's rule, `_should_save_on_train_epoch_end`):
    at the epoch's end for the usual once-per-epoch validation, else when validation ends.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._write_again_if_saved_at_this_step(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._write_again_if_saved_at_this_step(trainer)

    def _write_again_if_saved_at_this_step(self, trainer: L.Trainer) -> None:
        if (self._every_n_train_steps >= 1 and self._last_global_step_saved == trainer.global_step
                and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    @property
    def state_key(self) -> str:
        # The key Lightning's ModelCheckpoint uses (it starts with the class name), so that a
        # run whose last.ckpt was written by ModelCheckpoint resumes with its state.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)
