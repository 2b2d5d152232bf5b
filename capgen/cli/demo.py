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
from ..commands.demo.app import serve
from ..commands.failure import one_paragraph_on_failure
from ..config.argv import quote_paths, require_writable_run_folder

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="demo")
def _main(cfg: DictConfig) -> None:
    with one_paragraph_on_failure("capgen-demo"):
        page = serve(cfg)
    print(f"capgen-demo: serving at {page.local_url} (Ctrl-C stops)", flush=True)
    page.block_thread()  # until Ctrl-C or SIGTERM


def main() -> None:
    sys.argv[1:] = quote_paths(sys.argv[1:], ("run", "ckpt_path"))  # see capgen.config.argv
    require_writable_run_folder(sys.argv[1:], "demo")
    _main()


if __name__ == "__main__":
    main()
