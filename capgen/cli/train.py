"""capgen-train: build data, network and module from the Hydra config, fit, then test
(capgen.commands.train)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .. import config
from ..commands import train
from ..commands.failure import hydra_refusals, one_line_on_ctrl_c, refused_at_start
from ..config.command_line import command_line
from ..config.new_folder import leave_folders

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    return train.run(cfg)


def main() -> None:
    with one_line_on_ctrl_c("capgen-train"):  # a Ctrl-C outside the job, too
        try:
            with refused_at_start("capgen-train"):  # one paragraph, not a traceback, for what is refused here
                sys.argv[1:] = command_line("train", sys.argv[1:], check_values=train.check_train_config)
            with hydra_refusals("capgen-train"):  # --help with a config Hydra cannot compose
                _main()
        finally:  # however it ends: no run folder it made and left empty, no folder it locked still locked
            leave_folders()


if __name__ == "__main__":
    main()
