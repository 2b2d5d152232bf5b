"""capgen-caption: caption your own images with a checkpoint (capgen.commands.caption).

    capgen-caption ckpt_path=outputs/train/<run>/checkpoints/last.ckpt images=photos/
    capgen-caption ckpt_path=... images='photos/*.jpg' decode=greedy device=cuda
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .. import config
from ..commands.caption import caption_images
from ..commands.failure import one_paragraph_on_failure, refused_at_start
from ..config.argv import output_dir_as_run_dir, quote_paths, require_writable_run_folder

config.register()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="caption")
def _main(cfg: DictConfig) -> None:
    with one_paragraph_on_failure("capgen-caption"):
        rows = caption_images(cfg)
    # Images that failed are in captions.jsonl and on stderr; scripts learn of them here.
    # SystemExit passes through Hydra, which only reports Exceptions.
    if any("error" in row for row in rows):
        raise SystemExit(1)


def main() -> None:
    with refused_at_start("capgen-caption"):  # one paragraph, not a traceback
        sys.argv[1:] = output_dir_as_run_dir(quote_paths(sys.argv[1:], ("ckpt_path", "images")))  # see capgen.config.argv
        require_writable_run_folder(sys.argv[1:], "caption")
    _main()


if __name__ == "__main__":
    main()
