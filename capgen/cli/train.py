"""capgen-train: build data, network and module from the Hydra config, fit, then test
(capgen.training.train)."""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import hydra
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from ..training import config
from ..training.lock import hold, named_run_dir, record_holder, run_lock
from ..training.next_steps import what_next
from ..training.plugins import require_logger_packages, require_plugins
from ..training.resume import DDP_CHILD, resume_argv
from ..training.run_dir import run_recording_failure
from ..training.settings import check_command_keys
from ..training.train import train
from .argv import output_dir_as_run_dir, quote_paths, require_writable_run_folder
from .failure import one_paragraph_on_failure, refused_at_start

config.register()
log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    try:
        # One writer per run folder (capgen.training.lock); rank 0 only, as in main().
        with run_lock(Path(cfg.paths.output_dir)) if rank_zero_only.rank == 0 else nullcontext():
            with one_paragraph_on_failure("capgen-train"):
                metrics = run_recording_failure(train, cfg)
    finally:  # completed, failed or interrupted: where the run is and what to run next
        if rank_zero_only.rank == 0:
            log.info("\n".join(what_next(Path(cfg.paths.output_dir), cfg.monitor)))
    # The value a Hydra sweeper optimises: the best epoch's.
    return metrics.get(cfg.monitor)


def main() -> None:
    with refused_at_start("capgen-train"):  # one paragraph, not a traceback, for what is refused here
        _check_command_line()
    _main()


def _check_command_line() -> None:
    """Rewrite and check sys.argv before Hydra starts: nothing is written for a refused command."""
    sys.argv[1:] = quote_paths(sys.argv[1:], ("resume", "ckpt_path", "init_from"))  # see capgen.cli.argv
    sys.argv[1:] = output_dir_as_run_dir(sys.argv[1:])  # the whole run in one folder
    if not any(a.startswith(DDP_CHILD) for a in sys.argv[1:]):  # the launching process, not a DDP child
        os.environ[config.LAUNCH_TIME_ENV] = str(time.time())
    require_writable_run_folder(sys.argv[1:], "train")  # a read-only mount: one paragraph, before Hydra's mkdir
    require_plugins(sys.argv[1:])
    require_logger_packages(sys.argv[1:])  # logger=mlflow without mlflow: the pip command, nothing written
    # A folder the command names is locked before resume_argv copies its .hydra/ aside and Hydra
    # writes into it. Only by global rank 0: DDP's processes (and torchrun's or SLURM's other
    # ranks) have a rank in their environment and write into its folder under its lock.
    folder = named_run_dir(sys.argv[1:]) if rank_zero_only.rank == 0 else None
    if folder is not None:
        hold(folder, record=False)  # until this process ends; nothing written before the checks
    sys.argv[1:] = resume_argv(sys.argv[1:])  # resume=<run dir>: that run's settings and folder
    check_command_keys(sys.argv[1:])  # model.decoder.hiden_dim=3 (+ or not): refused before Hydra makes a run folder
    if folder is not None:
        record_holder(folder)  # accepted: name this process as the folder's writer


if __name__ == "__main__":
    main()
