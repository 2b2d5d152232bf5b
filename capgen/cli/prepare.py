"""capgen-prepare: write a data config's caches into `cache_dir` (capgen.commands.prepare).

    capgen-prepare data=coco2014 cache_dir=/scratch/coco_cache [features=true model/encoder=resnet101]
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .. import config
from ..commands import prepare
from ..commands.failure import hydra_refusals, one_line_on_ctrl_c, refused_at_start
from ..config.command_line import command_line

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="prepare")
def _main(cfg: DictConfig) -> None:
    return prepare.run(cfg)


def main() -> None:
    with one_line_on_ctrl_c("capgen-prepare"):  # a Ctrl-C outside the job, too
        with refused_at_start("capgen-prepare"):  # one paragraph, not a traceback, for what is refused here
            sys.argv[1:] = command_line("prepare", sys.argv[1:])
        with hydra_refusals("capgen-prepare"):  # --help with a config Hydra cannot compose
            _main()


if __name__ == "__main__":
    main()
