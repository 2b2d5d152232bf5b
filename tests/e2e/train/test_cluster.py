"""The SLURM launcher config, as far as it can be checked without a cluster: it composes with
tasks and GPUs per node following trainer.devices, the sbatch script submitit writes from it
asks for them, and the submitit launcher's local executor runs a training job."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from capgen.config import CONF_DIR

from helpers.workflow import SMALL, UNNAMED, capgen, job_dirs, summary

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the cluster extra: pip install -e '.[cluster]'")


def launcher(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_slurm_launcher_asks_for_one_task_and_gpu_per_device_on_each_node():
    slurm = launcher("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "data.num_workers=3")
    assert slurm["_target_"].endswith("SlurmLauncher")
    assert (slurm["tasks_per_node"], slurm["gpus_per_node"], slurm["nodes"]) == (4, 4, 2)
    assert slurm["cpus_per_task"] == 4  # the training process and its 3 loader workers

    one = launcher("trainer=gpu")
    assert (one["tasks_per_node"], one["gpus_per_node"], one["nodes"]) == (1, 1, 1)
    cpu = launcher("trainer=cpu")  # a CPU job asks for no GPU
    assert (cpu["tasks_per_node"], cpu["gpus_per_node"]) == (1, None)


def test_slurm_launcher_needs_a_device_count_it_can_give_slurm():
    with pytest.raises(InterpolationResolutionError, match=r"trainer.devices=-1: .*trainer.devices=4"):
        launcher("trainer=ddp")  # ddp.yaml's devices=-1 means "all", which SLURM cannot be asked for


@pytest.mark.slow
def test_slurm_launch_submits_an_sbatch_script_with_the_configured_resources(tmp_path):
    """capgen-train on SLURM up to the submission: sbatch (a stand-in that records the script
    it is given and refuses it) gets one task and GPU per device on each of 2 nodes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/usr/bin/env bash\ncp "${@: -1}" "$SBATCH_RECORD"\n'
                                     'echo "sbatch: test stand-in, nothing submitted" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks srun exists
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    record = tmp_path / "submitted.sh"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_RECORD": str(record)}
    done = capgen("train", "-m", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                  "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, env=env)
    assert done.returncode != 0 and "test stand-in, nothing submitted" in done.stderr
    script = record.read_text().splitlines()
    for line in ("#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4", "#SBATCH --nodes=2",
                 "#SBATCH --partition=gpu", "#SBATCH --time=1440"):
        assert line in script
    assert any(line.startswith("srun ") and "submitit" in line for line in script)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_training_job(tmp_path):
    done = capgen("train", "-m", "hydra/launcher=submitit_local", "model=rnn", "test=false", *SMALL, UNNAMED,
                  f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (job,) = job_dirs(tmp_path)
    assert job.name == "0_model=rnn"
    assert summary(job)["status"] == "completed"
    assert (job / summary(job)["best_checkpoint"]).is_file()
    assert list(Path(tmp_path, ".submitit").rglob("*_result.pkl"))  # run by submitit's executor
