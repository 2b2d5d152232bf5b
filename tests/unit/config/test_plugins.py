"""Optional extras: a missing Hydra plugin or logger package is named with the extra to install."""

import pytest

from capgen.config import plugins


def test_a_missing_optional_plugin_names_the_extra_to_install(monkeypatch):
    monkeypatch.setattr(plugins.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"hparams_search=attn_optuna needs .*pip install -e \"\.\[sweep\]\""):
        plugins.require_plugins(["model=attn", "hparams_search=attn_optuna"])
    with pytest.raises(SystemExit, match=r"pip install -e \"\.\[cluster\]\""):
        plugins.require_plugins(["-m", "hydra/launcher=slurm"])
    plugins.require_plugins(["-m", "model=rnn,lstm", "hparams_search=null"])  # nothing optional asked for
