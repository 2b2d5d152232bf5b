"""Caption scores (captions.py: the official COCO scorers), the grounding score of attention
models (grounding.py) and the per-image loss (loss.py), each a torchmetrics Metric that counts
every image once under DDP; the paired comparison of two runs (significance.py), the reward
(cider_reward.py) and caption statistics. Import from the module: the package itself imports
nothing, so capgen-compare, which needs only significance.py, starts without torch."""
