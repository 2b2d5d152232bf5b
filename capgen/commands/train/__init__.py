"""capgen-train: `train(cfg)` and the command's Hydra job `run(cfg)` (fit.py), the settings
checked together before anything is written (consistency.py) and what the command says when it
ends (next_steps.py)."""

from .fit import check_train_config, run, train

__all__ = ["check_train_config", "run", "train"]
