"""A dated run folder of its own for every command: `NewRunFolder`, a Hydra callback
(conf/hydra/default.yaml), reserves it with an exclusive mkdir.

The default run folder is named by the launch time to the second
(`outputs/<task>/<time>`, a sweep's `outputs/<task>/multirun_<time>`), so two commands started
in the same second would share one folder and one would overwrite the other's config,
results and log (or, for capgen-train, be refused as a new run in a folder that holds a run).
`os.mkdir` fails when the folder exists, so of two processes racing for a name exactly one
gets it; the other takes `<time>_1`, `<time>_2`, ...

It runs as a Hydra callback, in the launching process once the config is composed and just
before Hydra makes the folder itself: a command refused earlier (capgen.config.command_line,
or Hydra's own errors), `--cfg`, `--info` and `--help`, and a config composed with Hydra's
compose API (tests, notebooks) never reserve anything. A folder named some other way
(hydra.run.dir=, paths.output_dir=, resume=, a config) is left to Hydra as it is. So are the
processes DDP starts and torchrun's or SLURM's other ranks (global rank > 0): they write into
their launcher's folder. Lightning names it on their command line: a run's as hydra.run.dir
(from the composed config), a sweep's as the sys.argv it re-runs, to which the sweep's
folder is added below. (Hydra turns an exception in a callback into a warning: a folder that
cannot be made is then Hydra's own mkdir's to report, as before.)

A folder this process made for its run (here, or a new one named on capgen-train's command
line, capgen.config.command_line) that the command leaves holding nothing but the .lock it
wrote itself is removed when the command ends (`remove_unused`): a mistyped config group that
Hydra refuses once the folder is made, or a Ctrl-C while the command starts, would otherwise
leave a "run" of one .lock file that capgen-compare passes over. A folder holding anything
else, written by the run, by Hydra or by the user, is kept as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, read_write

from ..runs.lock import LOCK_FILE, release_all, remove_own_lock_file
from .argv import quote_paths

# What a folder named by the launch time holds in its unresolved name (conf/hydra/default.yaml).
DATED = "${capgen.launch_time:"
# The folders this process made for its run, in the order made (remove_unused).
_made: list[Path] = []


def made_for_run(folders: list[Path]) -> None:
    """Note folders this process made for its run (before Hydra writes into them), for remove_unused."""
    _made.extend(folders)


def remove_unused() -> None:
    """Remove each folder noted by made_for_run that holds nothing but, at most, the .lock this
    process wrote (see the module docstring), the innermost first; nothing else is touched."""
    while _made:
        folder = _made.pop()
        try:
            if set(os.listdir(folder)) - {LOCK_FILE}:
                continue  # Hydra, the run or the user wrote into it: it is a run folder now, kept
            if remove_own_lock_file(folder):
                folder.rmdir()  # fails, and is kept, if anything was written into it meanwhile
        except OSError:
            continue


def leave_folders() -> None:
    """A command's end, however it ends: the folders it made and left unused removed
    (remove_unused), and every run-folder lock it holds given up. The end of the process would
    release those locks; main() run in a process that goes on (a notebook, a test) kept a run
    that a resume= was refused on locked, and the next command there was refused as in use."""
    remove_unused()
    release_all()


def reserve(folder: Path) -> Path:
    """Make `folder`, or when it exists `<folder>_1`, `<folder>_2`, ...: the first of them that
    this process made itself (an exclusive mkdir, so no other process gets the same one)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = folder, 0
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = folder.with_name(f"{folder.name}_{n}")


def _reserve_dated(config: DictConfig, mode: str) -> str | None:
    """Reserve hydra.<mode>.dir (run or sweep) when it is the dated default and this is the
    launching process, and set it in `config`; the folder, or None when nothing was done."""
    node = config.hydra[mode]
    if rank_zero_only.rank != 0 or DATED not in str(OmegaConf.to_container(node, resolve=False)["dir"]):
        return None
    folder = str(reserve(Path(node.dir)))
    made_for_run([Path(folder)])
    with read_write(config.hydra):
        node.dir = folder
    return folder


class NewRunFolder(Callback):
    """Hydra's hooks before a run's or a sweep's folder is made (see the module docstring)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        # Hydra makes the job's folder from this config's hydra.run.dir, and Lightning hands
        # the same to the processes DDP starts.
        _reserve_dated(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        folder = _reserve_dated(config, "sweep")
        if folder is None:
            return
        # Each job's config is composed again from the sweep's Hydra overrides, and DDP's
        # processes re-run sys.argv (`-m` included) to join the jobs: both name the folder.
        override = quote_paths([f"hydra.sweep.dir={folder}"], ["hydra.sweep.dir"])[0]
        with read_write(config.hydra):
            config.hydra.overrides.hydra.append(override)
        sys.argv.append(override)
