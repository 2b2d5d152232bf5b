from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from capgen.cli.train import CONF_DIR


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the train config as `capgen-train` would, writing into tmp_path."""

    def make(*overrides: str, name: str = "run") -> DictConfig:
        out = Path(tmp_path) / name
        out.mkdir(parents=True, exist_ok=True)
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("train", overrides=["debug=fast", f"paths.output_dir={out}", *overrides])

    return make
