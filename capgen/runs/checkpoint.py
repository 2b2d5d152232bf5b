"""capgen's checkpoint format: stamped with the capgen that wrote it, and read back by one
function, `read_checkpoint` (the trainer writes it all-or-nothing: capgen.lightning.checkpoint_io).

A capgen checkpoint is Lightning's (weights, optimizer, loops, callbacks' states) plus the
vocabulary (`vocab`), the network's Hydra config (`hyper_parameters.net_config`) and what it
was trained on (`training_data`: the data config, its source and the image size; read into
`Checkpoint.trained`, capgen.runs.provenance), so that eval, caption and resume need nothing
else. `stamp` puts a format number and the capgen
version into every checkpoint (CaptioningModule.on_save_checkpoint); `read_checkpoint`, the
one place a checkpoint is loaded, refuses a file this capgen cannot use with a message that
names it and the fix.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..vocab import Vocabulary
from .folders import run_data_choice
from .provenance import KEY, TrainedOn, trained_on

# The layout of a capgen checkpoint: Lightning's keys plus "vocab" and hyper_parameters with
# "net_config". Raise it when that layout changes so that older code refuses newer files.
# Format 2 keeps the module's settings in groups (optimizer, scheduler, objective, val, test);
# files of format 1 (flat settings) are refused, as capgen has no release that wrote them.
CHECKPOINT_FORMAT = 2
FORMAT_KEY = "capgen"


def stamp(checkpoint: dict[str, Any]) -> None:
    checkpoint[FORMAT_KEY] = {"format": CHECKPOINT_FORMAT, "version": __version__}


def check_format(checkpoint: dict[str, Any], path: str | os.PathLike, setting: str = "ckpt_path") -> None:
    """Raise ValueError when `checkpoint` (read from `path`) is not one this capgen can use."""
    info = checkpoint.get(FORMAT_KEY)
    if not isinstance(info, dict):
        raise ValueError(
            f"{setting}={path}: the checkpoint has no capgen format stamp, so capgen-train did not write it; give "
            "a checkpoint from a capgen-train run (<run>/checkpoints/*.ckpt)."
        )
    fmt, version = info.get("format"), info.get("version", "unknown")
    if fmt == CHECKPOINT_FORMAT:
        return
    if isinstance(fmt, int) and 1 <= fmt < CHECKPOINT_FORMAT:
        raise ValueError(
            f"{setting}={path}: this checkpoint was written by capgen {version} in checkpoint format {fmt}, an earlier "
            f"layout of the module's settings that this capgen ({__version__}) no longer reads (it reads format "
            f"{CHECKPOINT_FORMAT}). Evaluate or resume it with the capgen that wrote it, or train a new run with this one."
        )
    raise ValueError(
        f"{setting}={path}: this checkpoint was written by capgen {version} in checkpoint format {fmt!r}, "
        f"but this capgen ({__version__}) reads format {CHECKPOINT_FORMAT}. Use the capgen version that wrote "
        "it (pip install capgen==<that version>) to evaluate or resume it, or train a new run with this one."
    )


class UnreadableCheckpoint(ValueError):
    """The file is not a checkpoint torch can read (truncated, or not a checkpoint at all).
    `reason`: what is wrong with it, without the advice (a resume that falls back to another
    checkpoint has taken it already)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Checkpoint:
    """What capgen reads from a checkpoint file (Lightning restores the rest itself)."""

    path: Path
    vocab: Vocabulary
    hparams: dict[str, Any]  # the module's hyper-parameters, with net_config (the network's config)
    state_dict: dict[str, torch.Tensor]
    global_step: int  # optimizer steps done
    trained: TrainedOn | None = None  # its training data, epochs and steps (capgen.runs.provenance)

    @property
    def net_config(self) -> dict:
        return self.hparams["net_config"]


def read_checkpoint(path: str | os.PathLike, setting: str = "ckpt_path") -> Checkpoint:
    """Load and check a capgen checkpoint; errors name `setting`=path and the fix."""
    p = Path(path)
    if not p.is_file():
        where = "is a folder; give a .ckpt file in it" if p.is_dir() else "no such file"
        raise FileNotFoundError(f"{setting}={path}: {where}")
    if not zipfile.is_zipfile(p):  # torch's own error would suggest weights_only=False, which is no fix here
        reason = ("not a checkpoint torch can read (not a whole zip archive, as torch.save writes: truncated by a copy "
                  "or download that stopped early, or another kind of file)")
        raise UnreadableCheckpoint(
            f"{setting}={path}: {reason}. Use another checkpoint of the run, e.g. one in its checkpoints/ folder.", reason)
    try:
        ckpt = _load(p)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
        reason = (f"not a checkpoint torch can read ({type(e).__name__}: {' '.join(str(e).split())}); it may be truncated "
                  "(a copy or download that stopped early)")
        raise UnreadableCheckpoint(f"{setting}={path}: {reason}: use another checkpoint of the run.", reason) from None
    missing = [k for k in ("vocab", "hyper_parameters", "state_dict") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(
            f"{setting}={path}: not a capgen checkpoint (it has no {', '.join(missing)}); give a checkpoint that "
            "capgen-train wrote (<run>/checkpoints/*.ckpt)."
        )
    check_format(ckpt, path, setting)
    hparams = dict(ckpt["hyper_parameters"])
    if not hparams.get("net_config"):
        raise ValueError(f"{setting}={path}: the checkpoint has no net_config; it was not written by capgen-train")
    vocab = Vocabulary.from_dict(
        ckpt["vocab"], source=f"{setting}={path}: its 'vocab' entry",
        fix="the file was altered or not written by capgen-train; use a checkpoint as capgen-train wrote it",
    )
    out = ckpt["state_dict"].get("net.decoder.out.weight")  # (V, D): one row per word
    if out is not None and out.shape[0] != len(vocab):
        raise ValueError(
            f"{setting}={path}: its weights do not fit its vocabulary: the vocabulary has {len(vocab)} words but its "
            f"weights were trained for {out.shape[0]}; the file was altered or assembled from two runs. Use a "
            "checkpoint as capgen-train wrote it."
        )
    trained = trained_on(ckpt, run_data_choice(str(p)))
    return Checkpoint(p, vocab, hparams, ckpt["state_dict"], int(ckpt.get("global_step", 0)), trained)


def recorded_data_choice(path: str | os.PathLike) -> str | None:
    """The data config a checkpoint records it was trained on (capgen.runs.provenance), read
    before Hydra starts, its weights memory-mapped rather than read; None when it records none
    or cannot be read so (read_checkpoint says why when the command loads it)."""
    try:
        ckpt = _load(path, mmap=True)
    except Exception:  # not a file, not a zip archive, damaged: the command's own reading says so
        return None
    entry = ckpt.get(KEY) if isinstance(ckpt, dict) else None
    name = entry.get("data") if isinstance(entry, dict) else None
    return name if isinstance(name, str) else None


def _load(path: str | os.PathLike, mmap: bool = False) -> Any:
    # weights_only: a checkpoint is data, never code (capgen keeps only tensors and plain
    # values in it, the module's metric lists included). mmap: the tensors mapped, not read.
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
