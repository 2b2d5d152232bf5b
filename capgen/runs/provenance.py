"""What a checkpoint was trained on, and the note capgen-caption and the demo give when a
model will not describe a photograph well: one trained on the synthetic shapes data, or for
only a few optimizer steps.

capgen-train records the data in every checkpoint (`training_data`: the data config's name,
its source class, the side its images were resized to, the resolved data config with its
paths made absolute (`config`), and the settings of it that decide which image is in which
split, with their values (`splits_by`: a source's SPLIT_SETTINGS, e.g. data=custom's
split_fractions and split_seed)); the epochs and steps are Lightning's own `epoch` and
`global_step`. So a checkpoint copied out of its run folder is scored on its own splits
(capgen.commands.eval.data), not on a draw that puts training images in the test split. A
checkpoint of an earlier capgen has no record (or none of the image size, the config or the
split settings): its run folder's .hydra/ files name the data config and its image size, when
the checkpoint is still in its run folder.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class
from omegaconf import OmegaConf

from .folders import CWD_PATHS

KEY = "training_data"
FEW_STEPS = 1000  # fewer optimizer steps than this: the captions are a first sketch at best


@dataclass
class TrainedOn:
    data: str | None  # the data config's name (shapes, coco2014, custom, ...), None when unknown
    epochs: int  # epochs trained (the epoch the checkpoint was written in, counted from 1)
    steps: int  # optimizer steps
    image_size: int | None = None  # the side its training images were resized to; None: not recorded
    config: dict | None = None  # the resolved data config it trained with, paths absolute; None: not recorded
    splits_by: dict | None = None  # the settings of `config` that decide the splits ("source.split_seed": 0, ...)

    @property
    def synthetic(self) -> bool:
        return self.data == "shapes"

    def describe(self) -> str:
        """e.g. "shapes, 8 epochs" for the demo's column."""
        return f"{self.data or 'data unknown'}, {self.epochs} epoch{'s' if self.epochs != 1 else ''}"

    def photo_note(self, checkpoint: str) -> str | None:
        """Why this model's caption of a photograph should not be trusted, or None."""
        if self.synthetic:
            return (f"{checkpoint} was trained on the built-in synthetic shapes data ({self.describe()}): it knows "
                    "only coloured shapes on a plain background, so a photograph gets a caption about shapes. "
                    "For photographs train on real captions (data=coco2014, data=flickr8k or your own: data=custom).")
        if self.steps < FEW_STEPS:
            return (f"{checkpoint} was trained for only {self.steps} optimizer steps ({self.describe()}): its captions "
                    "will be rough. Train longer (trainer.max_epochs=...) for better ones.")
        return None


def record(data_name: str, source_target: str, image_size: int | None = None,
           config: dict | None = None) -> dict[str, Any]:
    """The checkpoint entry capgen-train writes (CaptioningModule.on_save_checkpoint);
    `image_size`: the side the training images were resized to, where the data config says
    (capgen.runs.folders.training_image_size), so capgen-caption, -eval and -demo resize to it
    without the run folder; `config`: the resolved data config (a plain dict), recorded with
    its paths absolute and the settings that decide its splits (see the module docstring)."""
    entry: dict[str, Any] = {"data": data_name, "source": source_target}
    if image_size is not None:
        entry["image_size"] = int(image_size)
    if config is not None:
        entry["config"] = absolute_paths(config)
        splits = split_settings(config.get("source"))
        if splits is not None:
            entry["splits_by"] = splits
    return entry


def absolute_paths(config: dict) -> dict:
    """A copy of a data config (a plain dict) with the settings read relative to the working
    directory (CWD_PATHS) made absolute: the record names the same files from any directory."""
    out = {**config, "source": dict(config.get("source") or {})}
    for key in CWD_PATHS:
        *parents, leaf = key.removeprefix("data.").split(".")
        node = out["source"] if parents == ["source"] else out
        value = node.get(leaf)
        if isinstance(value, str) and value:
            node[leaf] = os.path.abspath(os.path.expanduser(value))
    return out


def split_settings(source: Any) -> dict[str, Any] | None:
    """The settings of a data config's source node that decide which image is in which split,
    as {"source.<name>": value}, a setting left out at its constructor's default: the source
    class's SPLIT_SETTINGS. None when the class cannot be found or declares none."""
    if not source or not source.get("_target_"):
        return None
    try:
        cls = get_class(str(source["_target_"]))
        names = cls.SPLIT_SETTINGS
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    except (AttributeError, ImportError, ValueError, TypeError):
        return None
    return {f"source.{name}": _plain(source.get(name, defaults.get(name))) for name in names}


def _plain(value: Any) -> Any:
    """A config value as plain data (an OmegaConf node as dict or list), for the record and for comparing."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def trained_on(checkpoint: dict[str, Any], run_data: str | None = None) -> TrainedOn:
    """What `checkpoint` (the loaded dict) was trained on; `run_data`: its run folder's data
    config, for a checkpoint written before capgen recorded it."""
    entry = checkpoint.get(KEY) or {}
    size = entry.get("image_size")
    size = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None  # written by hand: unknown
    config, splits = entry.get("config"), entry.get("splits_by")
    return TrainedOn(entry.get("data") or run_data, int(checkpoint.get("epoch", 0)) + 1,
                     int(checkpoint.get("global_step", 0)), size, config if isinstance(config, dict) else None,
                     splits if isinstance(splits, dict) else None)


def data_name(cfg_data: Any, choice: str | None) -> str:
    """The data config's name: Hydra's choice (data=shapes) when known, else from the source class."""
    if choice:
        return str(choice)
    target = str(cfg_data.get("source", {}).get("_target_", ""))
    return "shapes" if target.endswith("ShapesSource") else target.rpartition(".")[2] or "unknown"
