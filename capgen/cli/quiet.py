"""Lightning's lines that say nothing about the run, left out of every capgen command's output.

- "💡 Tip: For seamless cloud logging ... try installing litlogger": printed by every Trainer
  that has no LitLogger (its logger connector), an advertisement, not a finding about the run.
- "`isinstance(treespec, LeafSpec)` is deprecated": Lightning's own use of a torch API that
  torch 2.10+ deprecated (lightning/pytorch/utilities/_pytree.py), printed at each fit and test;
  nothing a user can change.
- "Checkpoint directory <run>/checkpoints exists and is not empty": at every resume. capgen-train
  refuses a new run in a folder that holds a run's checkpoints (capgen.config.argv), so a
  non-empty folder here is always the run's own, which the resume continues.

Everything else Lightning says is kept.
"""

from __future__ import annotations

import logging
import warnings

# The logger of Lightning's rank_zero_info (lightning_utilities' rank_zero module logs to it).
RANK_ZERO_LOG = "lightning.pytorch.utilities.rank_zero"
ADVERTISEMENT = "💡 Tip:"
TREESPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
OWN_CHECKPOINTS = r"Checkpoint directory .* exists and is not empty"


def _not_an_advertisement(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(ADVERTISEMENT)


def quiet_lightning() -> None:
    """Leave those lines out of this process's output (once: a filter added again is not added twice)."""
    logging.getLogger(RANK_ZERO_LOG).addFilter(_not_an_advertisement)
    warnings.filterwarnings("ignore", message=TREESPEC_DEPRECATION)
    warnings.filterwarnings("ignore", message=OWN_CHECKPOINTS)
