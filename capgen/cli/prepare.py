"""capgen-prepare: write a data config's caches into `cache_dir` (capgen.commands.prepare).

    capgen-prepare data=coco2014 cache_dir=/scratch/coco_cache [features=true model/encoder=resnet101]
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .. import config
from ..commands.failure import one_paragraph_on_failure
from ..commands.prepare import prepare
from ..config.argv import require_writable_run_folder

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="prepare")
def _main(cfg: DictConfig) -> None:
    with one_paragraph_on_failure("capgen-prepare"):
        prepare(cfg)


def main() -> None:
    require_writable_run_folder(sys.argv[1:], "prepare")  # its log folder; cache_dir is checked by prepare()
    _main()


if __name__ == "__main__":
    main()
