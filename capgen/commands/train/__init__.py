"""capgen-train: `train(cfg)` (fit.py), the settings checked together before anything is
written (consistency.py) and what the command says when it ends (next_steps.py)."""

from .fit import train

__all__ = ["train"]
