"""Shared fixtures. Layout: unit/ tests one piece of the library or training program each;
e2e/ runs whole commands (capgen-train, -eval, -caption, sweeps, DDP, kills); helpers/ is
what they share (data in the exact on-disk formats, command-line workflows); data/ holds
the official demo results file the tokenizer is checked on."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from capgen.training import config
from capgen.training.config import CONF_DIR

from helpers.trained import train_tiny_run

config.register()  # what every capgen command does before Hydra composes its configs


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the train config as `capgen-train` would, writing into tmp_path."""

    def make(*overrides: str, name: str = "run", small_shapes: bool = True) -> DictConfig:
        out = Path(tmp_path) / name
        out.mkdir(parents=True, exist_ok=True)
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["debug=fast", f"paths.output_dir={out}", *overrides])
        custom = any(o.startswith("data.source.sizes") for o in overrides)
        if small_shapes and not custom and "ShapesSource" in cfg.data.source._target_:
            cfg.data.source.sizes = {"train": 64, "val": 16, "test": 16}  # seconds, not minutes
        return cfg

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny attention (model=attn) run, trained once per session (helpers.trained)."""
    return train_tiny_run(tmp_path_factory.mktemp("train") / "run")


@pytest.fixture(scope="session")
def ckpt(tiny_run) -> str:
    return str(tiny_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="session")
def tiny_lstm_run(tmp_path_factory) -> Path:
    """The same with the LSTM decoder (no attention), for side-by-side comparisons."""
    return train_tiny_run(tmp_path_factory.mktemp("train_lstm") / "run", "model=lstm")
