"""What a run writes for TensorBoard beyond its curves, so that the views open on what matters.

- CUSTOM SCALARS: a layout whose first category holds the monitored metric, val/CIDEr,
  val/BLEU-4 and the two losses, one chart each with a line per run (TensorBoard merges the
  layouts of every run under --logdir, so a sweep's runs share the charts). Written once per
  TensorBoard run: a resume that appends to the run's folder finds it there.
- HPARAMS: the run's settings against its result, written at the end of a completed run as a
  session in the sub-run `<run>/best`. Its scalars are the result, under the curves' own tags:
  the best epoch's val/* at the step they were logged at (each a point on its curve, not a new
  card) and the best checkpoint's test/*. TensorBoard reads a session's metric values from the
  scalars of its run and sub-runs, so the columns are exactly these, never a curve's last value.
  No experiment summary is written: TensorBoard then builds the table from every session
  under --logdir and puts first the settings that differ between runs (model, seed, the
  overrides), where a run's own summary would fix one column order for all.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import custom_scalars
from torch.utils.tensorboard.summary import hparams as hparams_summary

log = logging.getLogger(__name__)

SESSION = "best"  # the sub-run of a run's TensorBoard folder that holds its HPARAMS session
CATEGORY = "Scores and losses (all runs)"
LAYOUT_TAG = "custom_scalars__config__"  # the tag add_custom_scalars writes the layout under


def layout(monitor: str) -> dict[str, dict[str, list]]:
    """The custom-scalars layout: {category: {chart title: ["Multiline", [tag regexes]]}}."""
    tags = dict.fromkeys([monitor, "val/CIDEr", "val/BLEU-4", "train/loss", "val/loss"])  # ordered, without repeats
    return {CATEGORY: {tag: ["Multiline", [f"^{tag}$"]] for tag in tags}}


@rank_zero_only
def write_layout(logger: TensorBoardLogger, monitor: str, step: int = 0) -> None:
    """The layout at `step` (where the run starts: 0, or a resume's checkpoint step), unless the
    logger's folder has it already. Called before anything else is logged there."""
    if has_layout(Path(logger.log_dir)):
        # A resume appending to the run's events: a second layout would be listed twice, and
        # at step 0 it would follow points at later steps.
        return
    # What SummaryWriter.add_custom_scalars writes, which takes no step (its events are at 0).
    logger.experiment.file_writer.add_summary(custom_scalars(layout(monitor)), step)


def has_layout(folder: Path) -> bool:
    """Whether an event file in `folder` (not its sub-runs) holds the layout. Each file is read to
    its first summary only: the layout is the first thing a run writes into its first file, and
    reading on would load every image the file holds."""
    for path in sorted(folder.glob("events.out.tfevents.*")):
        try:
            for event in EventFileLoader(str(path)).Load():
                if event.HasField("summary"):
                    if any(value.tag == LAYOUT_TAG for value in event.summary.value):
                        return True
                    break
        except (OSError, DecodeError) as e:  # a damaged file (a cut record is read as the end): skipped, as TensorBoard does
            log.warning("%s cannot be read (%s): looking for the custom-scalars layout in the run's other event files", path, e)
    return False


@rank_zero_only
def write_session(logger: TensorBoardLogger, params: dict[str, Any], best_val: dict[str, float], best_step: int,
                  test: dict[str, float], last_step: int) -> Path:
    """The run's HPARAMS session (see the module docstring) in <log_dir>/best, replacing one
    an earlier end of the same run wrote (a finished run resumed for more epochs); its folder."""
    folder = Path(logger.log_dir) / SESSION
    shutil.rmtree(folder, ignore_errors=True)
    _, start, end = hparams_summary(flat_values(params), {})
    with SummaryWriter(folder) as writer:
        writer.file_writer.add_summary(start)
        writer.file_writer.add_summary(end)
        for tag, value in best_val.items():
            writer.add_scalar(tag, value, best_step)
        for tag, value in test.items():
            writer.add_scalar(tag, value, last_step)
    return folder


def flat_values(params: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """{"model": {"decoder": {"hidden_dim": 512}}} -> {"model/decoder/hidden_dim": 512}; values
    HPARAMS cannot hold (None, lists) as their text."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out |= flat_values(value, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out
