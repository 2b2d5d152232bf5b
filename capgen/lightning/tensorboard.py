"""What a run writes for TensorBoard beyond its curves, so that the views open on what matters.

- CUSTOM SCALARS: a layout whose first category holds the monitored metric, val/CIDEr,
  val/BLEU-4 and the two losses, one chart each with a line per run (TensorBoard merges the
  layouts of every run under --logdir, so a sweep's runs share the charts).
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

import shutil
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

SESSION = "best"  # the sub-run of a run's TensorBoard folder that holds its HPARAMS session
CATEGORY = "Scores and losses (all runs)"


def layout(monitor: str) -> dict[str, dict[str, list]]:
    """The custom-scalars layout: {category: {chart title: ["Multiline", [tag regexes]]}}."""
    tags = dict.fromkeys([monitor, "val/CIDEr", "val/BLEU-4", "train/loss", "val/loss"])  # ordered, without repeats
    return {CATEGORY: {tag: ["Multiline", [f"^{tag}$"]] for tag in tags}}


@rank_zero_only
def write_layout(logger: TensorBoardLogger, monitor: str) -> None:
    logger.experiment.add_custom_scalars(layout(monitor))


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
