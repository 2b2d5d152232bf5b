"""capgen-prepare: write a data config's caches into `cache_dir` (capgen.training.prepare).

    capgen-prepare data=coco2014 cache_dir=/scratch/coco_cache [features=true model/encoder=resnet101]
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ..training import config
from ..training.prepare import prepare
from .argv import require_writable_run_folder
from .failure import one_paragraph_on_failure

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
