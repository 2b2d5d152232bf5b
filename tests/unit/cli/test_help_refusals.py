"""A Hydra error that Hydra does not report itself (it composes the config for --help outside
its job's error report) ends a command with one paragraph, not a traceback
(capgen.commands.failure.hydra_refusals)."""

from __future__ import annotations

import sys

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig


@pytest.mark.parametrize("command, args, named", [
    ("train", ["--help", "model=lsmt"], "Could not find 'model/lsmt'"),
    ("eval", ["--help", "decode=bem"], "Could not find 'decode/bem'"),
])
def test_help_with_a_config_hydra_cannot_compose_is_one_paragraph(command, args, named, monkeypatch, tmp_path):
    import importlib

    main = importlib.import_module(f"capgen.cli.{command}").main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # the traceback file goes to TMPDIR
    monkeypatch.setattr(sys, "argv", [f"capgen-{command}", *args])
    try:
        with pytest.raises(SystemExit) as stop:
            main()
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    message = str(stop.value.code)
    assert message.startswith(f"capgen-{command}: MissingConfigException: ") and named in message
    assert "\n" not in message and "(traceback in " in message
    assert [p.name.startswith(f"capgen-{command}-") for p in tmp_path.glob("*-error.txt")] == [True]
