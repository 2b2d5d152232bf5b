"""capgen-eval: `evaluate(cfg, overrides)` (evaluate.py) and the statistics it adds to the
scores (statistics.py)."""

from .evaluate import evaluate

__all__ = ["evaluate"]
