"""Small stand-ins the unit tests share: a two-caption vocabulary and a trainer as callbacks see it."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from capgen.vocab import Vocabulary


def tiny_vocab() -> Vocabulary:
    return Vocabulary.build(["a red circle", "a blue square"], max_len=3)


def fake_trainer(epoch: int, **metrics: float) -> SimpleNamespace:
    """What a callback reads of a trainer at the end of `epoch`: metrics as keyword arguments
    with the first "_" for "/" (val_CIDEr=0.5 is val/CIDEr)."""
    return SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=epoch,
                           callback_metrics={k.replace("_", "/", 1): torch.tensor(v) for k, v in metrics.items()},
                           checkpoint_callbacks=[])
