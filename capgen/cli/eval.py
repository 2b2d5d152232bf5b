"""capgen-eval: score a checkpoint on a split with the data settings of the run that made it
(capgen.commands.eval.evaluate).

    capgen-eval run=outputs/train/<run> [split=test] [decode.beam_size=5]   # the run's best checkpoint
    capgen-eval ckpt_path=outputs/train/<run>/checkpoints/last.ckpt  # or any checkpoint
    capgen-eval ckpt_path=... data.source.sizes.test=100      # the run's data, one setting changed
    capgen-eval ckpt_path=... data=coco2014 data.root=/mnt/coco   # other data altogether
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .. import config
from ..commands.eval.evaluate import evaluate, with_run_data_choice
from ..commands.failure import one_paragraph_on_failure, refused_at_start
from ..config.argv import output_dir_as_run_dir, quote_paths, require_writable_run_folder

PATH_KEYS = ("run", "ckpt_path")  # quoted for Hydra, see capgen.config.argv
config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="eval")
def _main(cfg: DictConfig) -> float | None:
    with one_paragraph_on_failure("capgen-eval"):
        report = evaluate(cfg, list(HydraConfig.get().overrides.task))
    return report.get("CIDEr")


def main() -> None:
    with refused_at_start("capgen-eval"):  # one paragraph, not a traceback
        sys.argv[1:] = with_run_data_choice(output_dir_as_run_dir(quote_paths(sys.argv[1:], PATH_KEYS)))
        require_writable_run_folder(sys.argv[1:], "eval")
    _main()


if __name__ == "__main__":
    main()
