"""Checkpoint files that survive a kill, and that say which capgen wrote them.

`AtomicCheckpointIO` is the trainer's checkpoint writer (conf/trainer/cpu.yaml, inherited by
every trainer config). A process killed at any moment, even half-way through writing
`last.ckpt`, leaves the previous complete `last.ckpt` in place: the bytes go to
`<name>.tmp`, are flushed to disk (fsync), and only then renamed over the final name
(`os.replace` is atomic on POSIX and Windows); the folder is fsynced so the rename itself
survives a power cut. A stale `<name>.tmp` from a killed write is overwritten by the next save.

`stamp` / `check_format` put a format number and the capgen version into every checkpoint
(CaptioningModule.on_save_checkpoint) and refuse, with a message that names the file and the
fix, checkpoints that this capgen cannot read.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
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
