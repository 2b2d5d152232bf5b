"""`capgen-<command> --help` lists the groups that command composes, with the options a user
picks: not the generated bases (capgen.config.registry.BASES), not another command's groups."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig

from capgen.config import CONF_DIR
from capgen.config.registry import BASES


def groups_in_help(monkeypatch, capsys, command: str, *args: str) -> dict[str, list[str]]:
    """Hydra's main for capgen-`command` with --help: the printed groups as {group: options}."""

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=command)
    def app(cfg):
        raise AssertionError("--help runs no job")

    # hydra.job.name: the calling file's name otherwise (capgen/cli/<command>.py gives <command>)
    monkeypatch.setattr(sys, "argv", [f"capgen-{command}", "--help", f"hydra.job.name={command}", *args])
    try:
        with pytest.raises(SystemExit):
            app()
    finally:
        HydraConfig.instance().cfg = None
    text = capsys.readouterr().out
    assert text.startswith(f"capgen-{command} ")
    listed = text.split("(group=option)\n", 1)[1].split("== Config ==", 1)[0]
    return {line.split(": ")[0]: line.split(": ")[1].split(", ") for line in listed.strip().splitlines()}


def yaml_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_help_lists_the_commands_groups_with_their_yaml_options_and_no_generated_base(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    train = groups_in_help(monkeypatch, capsys, "train")
    assert set(train) == {"callbacks", "data", "debug", "experiment", "hparams_search", "logger", "model",
                          "model/encoder", "paths", "trainer"}  # no decode, no model/module (its base only)
    for group, options in train.items():
        assert options == yaml_options(group), group
    listed = {name for options in train.values() for name in options}
    assert not listed & set(BASES.values())

    evaluate = groups_in_help(monkeypatch, capsys, "eval")
    assert set(evaluate) == {"data", "decode", "paths"}
    assert evaluate["decode"] == sorted([*yaml_options("decode"), "run"])  # run: generated, and a user's choice
    assert "_settings" not in evaluate["decode"]
    assert "_datamodule" not in evaluate["data"]
