"""Tiny trained runs for the tests that need a real checkpoint (capgen-eval, capgen-caption,
capgen-demo); the session fixtures in tests/conftest.py train each once per test session."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from capgen.training.config import CONF_DIR
from capgen.training.train import train

# val and test differ in size so the tests can tell which split, and whose settings, were used.
SIZES = "data.source.sizes={train:64,val:12,test:16}"


def train_tiny_run(run: Path, *overrides: str) -> Path:
    """A debug=fast run on tiny shapes data, in a run dir laid out as capgen-train leaves it:
    .hydra/{config,hydra}.yaml, checkpoints/ and summary.json."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["debug=fast", SIZES, *overrides, f"paths.output_dir={run}"],
                      return_hydra_config=True)
    hydra_node = cfg.hydra
    with open_dict(cfg):
        del cfg.hydra
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": dict(hydra_node.runtime.choices)}}}),
                   run / ".hydra" / "hydra.yaml")
    train(cfg)
    return run
