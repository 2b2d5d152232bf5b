"""capgen-eval: `evaluate(cfg, overrides)` and the command's Hydra job `run(cfg)` (evaluate.py),
the data config it scores on (data.py) and the statistics it adds to the scores (statistics.py)."""

from .evaluate import evaluate, run

__all__ = ["evaluate", "run"]
