"""capgen-demo: a local web page that captions pictures with one or more checkpoints
(capgen.commands.demo; needs the `demo` extra, gradio).

    capgen-demo run=outputs/train/<run>
    capgen-demo ckpt_path=<rnn>/checkpoints/last.ckpt,<attn>/checkpoints/last.ckpt port=8000
    capgen-demo run=outputs/train/multirun_<time> device=cuda server_name=0.0.0.0
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .. import config
from ..commands.demo import app
from ..commands.failure import hydra_refusals, one_line_on_ctrl_c, refused_at_start
from ..config.command_line import command_line

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="demo")
def _main(cfg: DictConfig) -> None:
    return app.run(cfg)


def main() -> None:
    with one_line_on_ctrl_c("capgen-demo"):  # a Ctrl-C outside the job, too
        with refused_at_start("capgen-demo"):  # one paragraph, not a traceback, for what is refused here
            sys.argv[1:] = command_line("demo", sys.argv[1:])
        with hydra_refusals("capgen-demo"):  # --help with a config Hydra cannot compose
            _main()


if __name__ == "__main__":
    main()
