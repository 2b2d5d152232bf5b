"""The OmegaConf resolvers capgen's configs use, registered by capgen.config.register():

    ${capgen.run_name:}                    conf/logger/tensorboard.yaml: the TensorBoard run's name
    ${capgen.launch_time:%Y-%m-%d_%H-%M-%S}            conf/hydra/default.yaml: run and sweep folders
    ${capgen.dirname:${hydra.job.override_dirname}}    conf/hydra/default.yaml: a sweep job's folder
    ${capgen.slurm_tasks:${trainer.devices}}            conf/hydra/launcher/slurm.yaml
    ${capgen.slurm_gpus:${trainer.accelerator},${trainer.devices}}
    ${capgen.slurm_cpus:${data.num_workers}}
"""

from __future__ import annotations

import hashlib
import os
import time

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

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


def register_resolvers() -> None:
    for name, fn in (("capgen.run_name", run_name), ("capgen.dirname", dirname), ("capgen.launch_time", launch_time),
                     ("capgen.slurm_tasks", slurm_tasks),
                     ("capgen.slurm_gpus", slurm_gpus), ("capgen.slurm_cpus", slurm_cpus)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
