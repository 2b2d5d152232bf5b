# capgen's Hydra configs, installed as the package data `capgen.conf` (see pyproject.toml).
