"""What a checkpoint was trained on, and the note capgen-caption and the demo give when a
model will not describe a photograph well: one trained on the synthetic shapes data, or for
only a few optimizer steps.

capgen-train records the data in every checkpoint (`training_data`: the data config's name,
its source class and the side its images were resized to); the epochs and steps are
Lightning's own `epoch` and `global_step`. A checkpoint of an earlier capgen has no record
(or none of the image size): its run folder's .hydra/ files name the data config and its
image size, when the checkpoint is still in its run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KEY = "training_data"
FEW_STEPS = 1000  # fewer optimizer steps than this: the captions are a first sketch at best


@dataclass
class TrainedOn:
    data: str | None  # the data config's name (shapes, coco2014, custom, ...), None when unknown
    epochs: int  # epochs trained (the epoch the checkpoint was written in, counted from 1)
    steps: int  # optimizer steps
    image_size: int | None = None  # the side its training images were resized to; None: not recorded

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


def record(data_name: str, source_target: str, image_size: int | None = None) -> dict[str, Any]:
    """The checkpoint entry capgen-train writes (CaptioningModule.on_save_checkpoint);
    `image_size`: the side the training images were resized to, where the data config says
    (capgen.runs.folders.training_image_size), so capgen-caption, -eval and -demo resize to it
    without the run folder."""
    entry: dict[str, Any] = {"data": data_name, "source": source_target}
    if image_size is not None:
        entry["image_size"] = int(image_size)
    return entry


def trained_on(checkpoint: dict[str, Any], run_data: str | None = None) -> TrainedOn:
    """What `checkpoint` (the loaded dict) was trained on; `run_data`: its run folder's data
    config, for a checkpoint written before capgen recorded it."""
    entry = checkpoint.get(KEY) or {}
    size = entry.get("image_size")
    size = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None  # written by hand: unknown
    return TrainedOn(entry.get("data") or run_data, int(checkpoint.get("epoch", 0)) + 1,
                     int(checkpoint.get("global_step", 0)), size)


def data_name(cfg_data: Any, choice: str | None) -> str:
    """The data config's name: Hydra's choice (data=shapes) when known, else from the source class."""
    if choice:
        return str(choice)
    target = str(cfg_data.get("source", {}).get("_target_", ""))
    return "shapes" if target.endswith("ShapesSource") else target.rpartition(".")[2] or "unknown"
