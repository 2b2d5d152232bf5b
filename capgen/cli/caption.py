"""capgen-caption: caption your own images with a checkpoint (capgen.commands.caption).

    capgen-caption ckpt_path=outputs/train/<run>/checkpoints/last.ckpt images=photos/
    capgen-caption ckpt_path=... images='photos/*.jpg' decode=greedy device=cuda
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .. import config
from ..commands import caption
from ..commands.failure import hydra_refusals, one_line_on_ctrl_c, refused_at_start
from ..config.command_line import command_line

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="caption")
def _main(cfg: DictConfig) -> None:
    return caption.run(cfg)


def main() -> None:
    with one_line_on_ctrl_c("capgen-caption"):  # a Ctrl-C outside the job, too
        with refused_at_start("capgen-caption"):  # one paragraph, not a traceback, for what is refused here
            sys.argv[1:] = command_line("caption", sys.argv[1:])
        with hydra_refusals("capgen-caption"):  # --help with a config Hydra cannot compose
            _main()


if __name__ == "__main__":
    main()
