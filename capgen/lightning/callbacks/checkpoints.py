"""Checkpoint callbacks: the best and the last checkpoint (their state follows a moved run
folder), and what a resume needs besides Lightning's own state (ExactResume)."""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from ...data.resumable import ResumableLoader
from .. import compat

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


class RelocatableCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose saved state follows the run folder when it is moved or copied,
    and starts afresh in a new run folder started from another run's checkpoint.

    The state (best and k-th best file, the top-k files, the last file) names absolute paths in
    the folder the run was in. Lightning restores it only when the folder is the same, and
    otherwise forgets the top-k files but keeps `best_model_path` pointing into the old folder:
    a moved run then keeps its old best file beside a new one (save_top_k broken), and a copy
    tests and records the other copy's file. Paths inside the old checkpoint folder are
    rebased onto this one before Lightning restores them.

    A rebased file that is not there was never written in this folder: the run is a new one
    (`capgen-train ckpt_path=<another run>/checkpoints/last.ckpt`). Those files are forgotten,
    with their scores: the new run's best is chosen among its own epochs, and its test loads a
    file it wrote, instead of failing on a path that exists in neither folder.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and os.path.normpath(old) != os.path.normpath(new):
            state_dict = _rebased(state_dict, old, new)
            if state_dict.get("best_model_path") and not os.path.isfile(state_dict["best_model_path"]):
                log.info("%s: the checkpoint's best epoch was saved in %s, not in this run's folder; this run's "
                         "best is chosen among its own epochs", type(self).__name__, old)
        super().load_state_dict(state_dict)


def _rebased(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """`state` with paths inside `old` moved into `new`; those whose file is not in `new` (and
    their scores) are left out, as if never saved."""
    def move(path):
        if not path:
            return path
        rel = os.path.relpath(path, old)
        moved = path if rel.startswith(os.pardir) else os.path.join(new, rel)
        return moved if os.path.isfile(moved) else ""

    state = dict(state, dirpath=new)
    for key in ("kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    if "best_model_path" in state:
        state["best_model_path"] = move(state["best_model_path"])
        if not state["best_model_path"]:
            state["best_model_score"] = None
    if "best_k_models" in state:
        kept = {move(p): v for p, v in state["best_k_models"].items()}
        kept.pop("", None)
        state["best_k_models"] = kept
        if not state.get("kth_best_model_path") and "kth_value" in state:
            state.pop("kth_value")  # Lightning's default (the worst possible) stays
    return state


class BestCheckpoint(RelocatableCheckpoint):
    """The best epoch by the run's monitor (Lightning's ModelCheckpoint; see RelocatableCheckpoint)."""


class LastCheckpoint(RelocatableCheckpoint):
    """last.ckpt, the checkpoint a run resumes from.

    Written at epoch ends, after validation, or every N optimizer steps
    (`every_n_train_steps=N`). In the step mode a save can fall on the last step before a
    validation (an epoch's last step), and Lightning then skips the save after that
    validation, as it already saved at that step. A run resumed from that file would start
    after the validation without having run it: that epoch's val scores, and its place in
    the best-checkpoint tracker, would be missing. So once a validation is settled at a step
    that was saved, last.ckpt is written again, now holding its results. "Settled" is when
    the best checkpoint is saved too (Lightning's rule, compat.saves_on_train_epoch_end):
    at the epoch's end for the usual once-per-epoch validation, else when validation ends.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not compat.saves_on_train_epoch_end(self, trainer):
            self._write_again_if_saved_at_this_step(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if compat.saves_on_train_epoch_end(self, trainer):
            self._write_again_if_saved_at_this_step(trainer)

    def _write_again_if_saved_at_this_step(self, trainer: L.Trainer) -> None:
        if (compat.every_n_train_steps(self) >= 1 and compat.last_saved_step(self) == trainer.global_step
                and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run):
            compat.save_now(self, trainer)


def _mend_epoch_progress(checkpoint: dict[str, Any]) -> None:
    """Repair a count Lightning gets wrong, before it restores its loops (callbacks are restored
    first). A run resumed from a step checkpoint written at the last batch of an epoch does not
    count the next epoch as started (its epoch progress stays ready = started = completed); a
    step checkpoint it writes in that next epoch then makes a second resume re-run that epoch's
    batches from the start of Lightning's count. An epoch with batches in progress is started."""
    fit = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs, batches = fit.get("epoch_progress"), fit.get("epoch_loop.batch_progress")
    if not epochs or not batches or batches["current"]["ready"] == 0:
        return
    for counts in (epochs["total"], epochs["current"]):
        if counts["started"] <= counts["completed"]:
            counts["ready"] = counts["started"] = counts["completed"] + 1


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
        _mend_epoch_progress(checkpoint)
        self._pending = checkpoint.get(self.KEY)
        if self._pending is None:
            log.warning("the checkpoint was written without the exact_resume callback: the run continues, but its "
                        "random streams and loader position start afresh")
            return
        states = self._pending["rng"]
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
