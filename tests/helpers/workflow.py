"""Helpers for the tests that run capgen-train as a user would, and read what it leaves."""

from __future__ import annotations

import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from .procs import capgen  # noqa: F401 (the tests' one way to run a command, here for the workflow tests)
from .runs import CHEAP, SIZES, cheap


def small(*overrides: str) -> list[str]:
    """Tiny shapes data, a few batches and the cheap test settings (helpers.runs), then `overrides`
    (`logger=tensorboard` turns that one back on). UNNAMED keeps them out of job folders' names."""
    return cheap("debug=fast", SIZES, *overrides)


SMALL = small()
UNNAMED = ("hydra.job.config.override_dirname.exclude_keys=[ckpt_path,trainer.devices,hparams_search,debug,data.source.sizes,"
           f"test,trainer.max_epochs,{','.join(CHEAP)}]")


def job_dirs(sweep: Path) -> list[Path]:
    """A sweep's job folders, in job order."""
    jobs = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(jobs, key=lambda p: int(p.name.split("_", 1)[0]))


def summary(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


def tensorboard_runs(root: Path) -> dict[str, Path]:
    """TensorBoard's runs under root, by the name `tensorboard --logdir root` shows for them."""
    dirs = {p.parent for p in root.rglob("events.out.tfevents.*")}
    return {str(d.relative_to(root)): d for d in dirs}


def read_events(run: Path) -> EventAccumulator:
    return EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0, "scalars": 0}).Reload()


def hparams_entry(events: EventAccumulator) -> tuple[dict, bool]:
    """A TensorBoard run's HPARAMS session: its hyper-parameters, and whether the run also holds
    an experiment summary (which would fix the table's columns for every run)."""
    params, experiment = {}, False
    try:
        contents = events.PluginTagToContent("hparams")
    except KeyError:  # the run has no HPARAMS data at all
        contents = {}
    for content in contents.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for key, value in data.session_start_info.hparams.items():
                params[key] = getattr(value, value.WhichOneof("kind"))  # string, number or bool
        experiment |= data.HasField("experiment")
    return params, experiment
