"""The capgen-prepare arguments that write a command's caches: its data config (`data=<name>`) and
the data.* settings given on its command line that change what a cache holds, as typed. The
datamodule names them in every line that gives the capgen-prepare command (a stale or damaged
cache, a cache to write), so the command can be run as shown (CaptionDataModule.prepare_command).
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from ..runs.folders import as_typed
from .argv import DATA_PATH_KEYS

# data.* settings that change nothing capgen-prepare writes (how batches are drawn), or that
# capgen-prepare gives its own way (cache_dir=, features=true).
NOT_CACHED = ("batch_size", "eval_batch_size", "train_captions_per_image", "num_workers", "seed", "cache_dir",
              "use_features")


def prepare_args(choice: str | None, overrides: list[str]) -> list[str] | None:
    """`data=<choice>` and the data.* overrides among `overrides` (a command line's, as Hydra
    saved it) that make a cache, in their order, a path as typed; None when the data config's
    name is not known (the lines then keep a placeholder for it)."""
    if not choice:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    except HydraException:
        parsed = []
    given = [as_typed(o.input_line, DATA_PATH_KEYS) for o in parsed
             if o.key_or_group.startswith("data.") and o.key_or_group.split(".")[1] not in NOT_CACHED]
    return [f"data={choice}", *given]
