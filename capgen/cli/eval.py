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
from omegaconf import DictConfig

from .. import config
from ..commands import eval as evaluate
from ..commands.failure import hydra_refusals, one_line_on_ctrl_c, refused_at_start
from ..config.command_line import command_line

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="eval")
def _main(cfg: DictConfig) -> float | None:
    return evaluate.run(cfg)


def main() -> None:
    with one_line_on_ctrl_c("capgen-eval"):  # a Ctrl-C outside the job, too
        with refused_at_start("capgen-eval"):  # one paragraph, not a traceback, for what is refused here
            sys.argv[1:] = command_line("eval", sys.argv[1:])
        with hydra_refusals("capgen-eval"):  # --help with a config Hydra cannot compose
            _main()


if __name__ == "__main__":
    main()
