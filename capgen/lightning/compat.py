"""Every use of a private Lightning name in capgen, each with the public API it stands in for.

capgen is tested with the Lightning range pinned in pyproject.toml; when an upgrade renames
one of these, this module is the one place to change, and the tests that exercise each
(named below) fail loudly rather than silently.
"""

from __future__ import annotations

import csv

import lightning as L
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies import ParallelStrategy


def is_local_path(path) -> bool:
    """Whether `path` is on the local file system (not s3://, gs://, ...). Lightning exposes no
    public test; capgen writes local checkpoints atomically itself (tests/unit/runs/test_checkpoint.py)."""
    return _is_local_file_protocol(path)


def logged_step(trainer: L.Trainer) -> int:
    """The step Lightning logs a point at when it is given none (Trainer's log_metrics): its count
    of batches that stepped the optimizer, which is not always `global_step`. No public name
    gives it; the HPARAMS session's points must fall on the curves' (test_sweeps)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def rich_available() -> bool:
    """Whether Lightning's default progress bar is its rich one (rich installed), the choice a
    Trainer makes itself (callback_connector); Lightning exposes it under a private name only.
    capgen's bar without `v_num` follows it (tests/unit/lightning/test_callbacks.py)."""
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    return bool(_RICH_AVAILABLE)


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The module's trainer, or None when it is used without one. `module.trainer` raises when
    no trainer is attached, and there is no public "is attached" check."""
    return module._trainer


def syncs_batchnorm(trainer: L.Trainer) -> bool:
    """Whether Trainer(sync_batchnorm=True) was asked for: Lightning keeps it only as the
    strategy's layer-sync plugin, with no public accessor (tests/e2e/train/test_ddp_train.py). Only parallel
    strategies have one."""
    strategy = trainer.strategy
    return isinstance(strategy, ParallelStrategy) and strategy._layer_sync is not None


# ModelCheckpoint's state and steps that capgen.lightning.callbacks.LastCheckpoint reads to write
# last.ckpt again after a validation that followed a step save (e2e test_exact_resume); Lightning
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


def appending_csv_writer(logger: CSVLogger, purge_step: int) -> ExperimentWriter:
    """The CSV logger's writer (made on first use, as CSVLogger.experiment makes it) for a resumed
    run: its metrics.csv keeps the rows logged before `purge_step` and new rows are appended.
    Lightning's writer deletes an existing metrics.csv in its private `_check_log_dir_exists`,
    with no option to keep it (e2e test_loggers' resume test)."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = _AppendingWriter(logger.log_dir, purge_step)
    return logger._experiment


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, purge_step: int) -> None:
        self.purge_step = purge_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # ExperimentWriter.__init__ deletes metrics.csv here
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            keys = list(reader.fieldnames or [])
            rows = [row for row in reader if int(row["step"]) < self.purge_step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys  # new columns rewrite the header (ExperimentWriter.save)
