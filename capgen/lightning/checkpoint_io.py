"""The trainer's checkpoint writer (conf/trainer/cpu.yaml, inherited by every trainer config):
a process killed at any moment, even half-way through writing `last.ckpt`, leaves the previous
complete `last.ckpt` in place (capgen.atomic). The format it writes is capgen.runs.checkpoint's.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..atomic import write_atomically
from .compat import is_local_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local writes are all-or-nothing (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not is_local_path(path):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote stores: fsspec's own transaction
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise first: a failure here touches no file
        write_atomically(Path(path), buffer.getbuffer())
