"""capgen-train: build data, network and module from the Hydra config, fit, then test
(capgen.training.train)."""

from __future__ import annotations

import os
import sys
import time

import hydra
from omegaconf import DictConfig

from ..training import config
from ..training.plugins import require_plugins
from ..training.resume import DDP_CHILD, resume_argv
from ..training.run_dir import run_recording_failure
from ..training.train import train
from .argv import quote_paths

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    metrics = run_recording_failure(train, cfg)
    # The value a Hydra sweeper optimises: the best epoch's.
    return metrics.get(cfg.monitor)


def main() -> None:
    sys.argv[1:] = quote_paths(sys.argv[1:], ("resume", "ckpt_path"))  # see capgen.cli.argv
    if not any(a.startswith(DDP_CHILD) for a in sys.argv[1:]):  # the launching process, not a DDP child
        os.environ[config.LAUNCH_TIME_ENV] = str(time.time())
    require_plugins(sys.argv[1:])
    sys.argv[1:] = resume_argv(sys.argv[1:])  # resume=<run dir>: that run's settings and folder
    _main()


if __name__ == "__main__":
    main()
