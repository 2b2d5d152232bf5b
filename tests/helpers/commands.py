"""capgen commands in the test process, so the tests skip a process start (about 6 s of imports):
capgen-eval and capgen-caption from the same overrides their main() hands on (paths quoted, the
run's data choice added), and any command through its own main() (main_in_process)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from capgen.commands.caption import caption_images
from capgen.commands.eval.evaluate import evaluate
from capgen.config import CONF_DIR
from capgen.config.argv import quote_paths, with_run_data_choice
from capgen.config.command_line import LIST_KEYS, PATH_KEYS


def run_eval(out: Path, *overrides: str) -> dict:
    """capgen-eval <overrides>, writing into out. BLEU and CIDEr only unless `metrics=` is given:
    METEOR's Java start-up alone takes seconds."""
    if not any(o.startswith("metrics=") for o in overrides):
        overrides = ("metrics=[BLEU,CIDEr]", *overrides)
    given = with_run_data_choice(quote_paths(list(overrides), PATH_KEYS["eval"], LIST_KEYS["eval"]))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[*given, f"paths.output_dir={out}"])
    return evaluate(cfg, given)


def run_caption(out: Path, *overrides: str) -> list[dict]:
    """capgen-caption <overrides>, writing into out: its rows."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("caption", overrides=[*overrides, f"paths.output_dir={out}"])
    return caption_images(cfg)


def main_in_process(command: str, *args: str, cwd: Path, monkeypatch) -> int | str | None:
    """`capgen-<command> args...` through the command's own main() in this process (its argument
    checks, Hydra, the job and its one-paragraph refusals), from `cwd`: how it exited, the
    SystemExit code (a refusal's paragraph, or a status), None when it returned. A process start
    costs about 6 s of imports (torch, Lightning, torchmetrics); tests whose point is not the
    process itself take this instead. The console's output is the caller's capsys."""
    import importlib
    import sys

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [f"capgen-{command}", *args])
    try:
        importlib.import_module(f"capgen.cli.{command}").main()
    except SystemExit as e:
        return e.code
    return None
