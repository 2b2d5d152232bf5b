"""Lightning's lines that say nothing about the run are left out of a command's output
(capgen.cli.quiet); its other lines stay."""

from __future__ import annotations

import logging
import warnings

import pytest
from lightning_utilities.core.rank_zero import rank_zero_info

from capgen.cli.quiet import RANK_ZERO_LOG, _not_an_advertisement, quiet_lightning


@pytest.fixture
def lightning_lines():
    """The messages that reach the handlers of Lightning's rank-zero logger."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    log = logging.getLogger(RANK_ZERO_LOG)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield messages
    log.removeHandler(handler)
    log.setLevel(level)


def test_lightnings_advertisement_inner_deprecation_and_resume_warning_are_left_out_and_the_rest_kept(lightning_lines):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        # Lightning's own words (its logger connector; lightning/pytorch/utilities/_pytree.py).
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](...)")
        rank_zero_info("GPU available: False, used: False")
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
                      "treespec.is_leaf()` instead.", FutureWarning, stacklevel=1)
        warnings.warn("Checkpoint directory /runs/a/checkpoints exists and is not empty.", UserWarning, stacklevel=1)
        warnings.warn("`trainer.x` is deprecated", DeprecationWarning, stacklevel=1)
    assert lightning_lines == ["GPU available: False, used: False"]
    assert [str(w.message) for w in caught] == ["`trainer.x` is deprecated"]
    logging.getLogger(RANK_ZERO_LOG).removeFilter(_not_an_advertisement)
