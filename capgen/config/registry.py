"""Where capgen's Hydra configs live, and what they need registered before Hydra composes them.

`register()` (called by every capgen command, and by anything composing capgen's configs)
adds two things:

- Config nodes generated from constructor signatures, so that every constructor argument
  can be overridden without `+` while the YAML files state only what differs from its
  default: `model/module: captioning` (CaptioningModule, its groups of settings as nested
  nodes: model.module.optimizer.lr, model.module.objective.scst.samples, ...) and `data: _datamodule`
  (CaptionDataModule), the bases the model and data configs start from; and from the
  fields of DecodeSettings, `decode: _settings` (the base of conf/decode/'s presets) and
  `decode: run` (capgen-eval's default: the run's own test decode).
- The OmegaConf resolvers below.

    ${capgen.run_name:}                    conf/logger/tensorboard.yaml: the TensorBoard run's name
    ${capgen.launch_time:%Y-%m-%d_%H-%M-%S}            conf/hydra/default.yaml: run and sweep folders
    ${capgen.dirname:${hydra.job.override_dirname}}    conf/hydra/default.yaml: a sweep job's folder
    ${capgen.slurm_tasks:${trainer.devices}}            conf/hydra/launcher/slurm.yaml
    ${capgen.slurm_gpus:${trainer.accelerator},${trainer.devices}}
    ${capgen.slurm_cpus:${data.num_workers}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import inspect
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from .help import config_groups as help_groups


def _conf_dir(package_file: str = __file__) -> str:
    """The configs: conf/ in the source tree, installed as the package data capgen.conf
    (pyproject.toml maps one onto the other). In a source checkout (pyproject.toml and
    conf/train.yaml beside capgen/) the conf/ beside the imported code, always: capgen.conf
    may be another checkout's (an editable install of one checkout, the code of a second one
    imported through PYTHONPATH or a git worktree), and code and configs must not mix."""
    root = Path(package_file).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "conf" / "train.yaml").is_file():
        return str(root / "conf")
    return str(importlib.resources.files("capgen.conf"))


CONF_DIR = _conf_dir()


# A path component may not exceed 255 bytes; long override lists are cut, with a hash kept
# so that two runs whose names share their first 180 characters stay apart.
_MAX_NAME = 180


def dirname(name: str) -> str:
    """`name` (overrides such as `data.root=/mnt/coco,model=lstm`) as ONE folder name: a `/`
    in a value would otherwise nest folders (`data.root=` / `mnt` / ...), so it becomes `_`;
    names over _MAX_NAME bytes are cut and end in a hash of the whole."""
    whole = name
    name = name.replace("/", "_")
    if len(name.encode()) > _MAX_NAME:
        digest = hashlib.sha1(whole.encode()).hexdigest()[:8]
        name = name.encode()[:_MAX_NAME].decode(errors="ignore") + "..." + digest
    return name


def run_name() -> str:
    """The run's command-line overrides as Hydra writes them for a sweep job's folder
    (`hydra.job.override_dirname`: sorted, with its excluded keys left out), so that in
    `tensorboard --logdir outputs` every run is named by what was changed. "default" for a
    run with no overrides, and outside a Hydra app (a config composed in a test or a
    notebook), where no command line exists."""
    name = HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""
    return dirname(name) if name else "default"


# The launch time of a capgen-train command, set by capgen.config.command_line for the DDP processes it starts.
LAUNCH_TIME_ENV = "CAPGEN_LAUNCH_TIME"


def launch_time(fmt: str) -> str:
    """When the command was launched, as `fmt` (strftime). Like Hydra's ${now:}, except that
    the processes Lightning starts for DDP (which re-run the command line, `-m` included, and
    inherit the environment) get their parent's time, so that a sweep's folder, named by it,
    is the same for all of them instead of one a few seconds later."""
    return time.strftime(fmt, time.localtime(float(os.environ.get(LAUNCH_TIME_ENV, time.time()))))


def slurm_tasks(devices) -> int:
    """SLURM tasks per node: one per device, as Lightning's DDP on SLURM expects."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(
            f"trainer.devices={devices!r}: on SLURM give the number of devices per node as a positive "
            "number (e.g. trainer.devices=4); hydra.launcher.tasks_per_node and gpus_per_node follow it"
        )
    return devices


def slurm_gpus(accelerator: str, devices) -> int | None:
    """GPUs to ask SLURM for per node: one per task on a GPU trainer, none on a CPU one."""
    tasks = slurm_tasks(devices)
    return None if accelerator == "cpu" else tasks


def slurm_cpus(num_workers: int) -> int:
    """CPUs per task: the training process and its DataLoader workers."""
    return num_workers + 1


def signature_node(cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """{_target_: cls, argument: default, ...} for every constructor argument with a default
    (except `skip`): the single place those defaults are written is the constructor."""
    node: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name != "self" and name not in skip and p.default is not inspect.Parameter.empty:
            node[name] = _config_value(p.default)
    return node


def _config_value(default: Any) -> Any:
    """A constructor default as config data: a tuple as a list, a dataclass (a group of
    settings such as DecodeSettings or the module's ObjectiveSettings) as the dict of its
    fields, nested ones included, so each field is a setting."""
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        default = dataclasses.asdict(default)
    if isinstance(default, dict):
        return {k: _config_value(v) for k, v in default.items()}
    if isinstance(default, (tuple, list)):
        return [_config_value(v) for v in default]
    return default


# The bases register() generates for the YAML files of these groups to start from (no one
# selects them on the command line: --help leaves them out, capgen.config.help).
BASES = {"decode": "_settings", "model/module": "captioning", "data": "_datamodule"}


def register() -> None:
    # Imported here: capgen-compare imports this package's run records without Lightning.
    from ..data.datamodule import CaptionDataModule
    from ..lightning.module import CaptioningModule
    from .decode_group import config_nodes as decode_nodes

    store = ConfigStore.instance()
    # decode/_settings (the presets' base) and decode/run (the run's test decode), see capgen.config.decode_group
    for name, node in decode_nodes().items():
        store.store(group="decode", name=name, node=node)
    # net, vocab, net_config: built by capgen.commands.train.fit; vocab, encoder, encoder_weights: handed over by it.
    # The run's monitor drives the plateau schedule too (oc.select: configs without a top-level
    # monitor, such as capgen-prepare's, still resolve).
    module = signature_node(CaptioningModule, ("net", "vocab", "net_config"))
    module["scheduler"].update(monitor="${oc.select:monitor,val/CIDEr}", mode="${oc.select:monitor_mode,max}")
    store.store(group="model/module", name=BASES["model/module"], node=module)
    # vocab, encoder, encoder_weights, prepare_args: handed over by the commands.
    skip = ("vocab", "encoder", "encoder_weights", "prepare_args")
    store.store(group="data", name=BASES["data"], node={**signature_node(CaptionDataModule, skip), "seed": "${seed}"})
    for name, fn in (("capgen.run_name", run_name), ("capgen.dirname", dirname), ("capgen.launch_time", launch_time),
                     ("capgen.slurm_tasks", slurm_tasks),
                     ("capgen.slurm_gpus", slurm_gpus), ("capgen.slurm_cpus", slurm_cpus),
                     ("capgen.help_groups", help_groups)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
