"""What a Lightning Trainer runs: the LightningModule (module.py) with its training recipes and
caption samples, the callbacks, the loggers and the hyper-parameters they show, the machine's
precision and memory-format choices, and every private Lightning name capgen uses (compat.py)."""
