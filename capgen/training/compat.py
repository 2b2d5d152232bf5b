"""Every use of a private Lightning name in capgen, each with the public API it stands in for.

capgen is tested with the Lightning range pinned in pyproject.toml; when an upgrade renames
one of these, this module is the one place to change, and the tests that exercise each
(named below) fail loudly rather than silently.
"""

from __future__ import annotations

import lightning as L
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ParallelStrategy


def is_local_path(path) -> bool:
    """Whether `path` is on the local file system (not s3://, gs://, ...). Lightning exposes no
    public test; capgen writes local checkpoints atomically itself (test_checkpointing)."""
    return _is_local_file_protocol(path)


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The module's trainer, or None when it is used without one. `module.trainer` raises when
    no trainer is attached, and there is no public "is attached" check."""
    return module._trainer


def syncs_batchnorm(trainer: L.Trainer) -> bool:
    """Whether Trainer(sync_batchnorm=True) was asked for: Lightning keeps it only as the
    strategy's layer-sync plugin, with no public accessor (test_ddp_train). Only parallel
    strategies have one."""
    strategy = trainer.strategy
    return isinstance(strategy, ParallelStrategy) and strategy._layer_sync is not None


# ModelCheckpoint's state and steps that capgen.training.callbacks.LastCheckpoint reads to write
# last.ckpt again after a validation that followed a step save (test_exact_resume); Lightning
# has no public hook for "a validation settled at a step that was already saved".
def every_n_train_steps(callback: ModelCheckpoint) -> int:
    return callback._every_n_train_steps


def last_saved_step(callback: ModelCheckpoint) -> int | None:
    return callback._last_global_step_saved


def saves_on_train_epoch_end(callback: ModelCheckpoint, trainer: L.Trainer) -> bool:
    return callback._should_save_on_train_epoch_end(trainer)


def save_now(callback: ModelCheckpoint, trainer: L.Trainer) -> None:
    """Write the callback's checkpoint with the current monitored values."""
    callback._save_topk_checkpoint(trainer, callback._monitor_candidates(trainer))


def slurm_requeues(trainer: L.Trainer) -> bool:
    """Whether Lightning itself handles SLURM's requeue signal (SLURMEnvironment with
    auto_requeue): the cluster environment is only reachable through the accelerator
    connector."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    environment = trainer._accelerator_connector.cluster_environment
    return isinstance(environment, SLURMEnvironment) and environment.auto_requeue
