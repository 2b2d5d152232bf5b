"""`trainer=ddp_cpu`: two gloo processes train and validate, and score exactly like one process."""

import os
import subprocess
import sys
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_exact_resume import assert_same_training_state, checkpoint, scalars

from capgen.training.callbacks import BatchNormPolicy
from capgen.training.module import CaptioningModule

# 15 validation images in batches of 4 over 2 processes: Lightning's distributed sampler
# pads them to 16, so one image is decoded on both ranks and must be scored once.
DDP_RUN = ["trainer=ddp_cpu", "debug=fast", "model=lstm", "test=false", "data.source.sizes={train:64,val:15,test:16}",
           "data.batch_size=4", "trainer.limit_val_batches=1.0", "callbacks.batchnorm.mode=frozen"]


def validate_in_one_process(run: Path) -> dict[str, float]:
    """trainer.validate on the run's last.ckpt with the run's own data config, one CPU process."""
    module = CaptioningModule.from_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    data_cfg = OmegaConf.load(run / ".hydra" / "config.yaml").data
    datamodule = hydra.utils.instantiate(data_cfg, vocab=module.vocab)
    module.set_references("val", datamodule.references("val"))  # what train() hands the module
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    return trainer.validate(module, datamodule=datamodule)[0]


@pytest.mark.slow
def test_ddp_cpu_trains_and_validates_like_one_process(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "capgen.cli.train", *DDP_RUN, f"hydra.run.dir={run}"], cwd=tmp_path,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "train_ddp_process_1.log").is_file()  # the second process ran, in the same run folder
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # 3 steps, each on both processes' batches

    # BatchNorm frozen as configured: the running statistics never moved from their start.
    for name, value in last["state_dict"].items():
        if name.endswith("running_mean"):
            assert torch.equal(value, torch.zeros_like(value)), name
        elif name.endswith("running_var"):
            assert torch.equal(value, torch.ones_like(value)), name
        elif name.endswith("num_batches_tracked"):
            assert int(value) == 0, name

    logged = {tag: points[-1][1] for tag, points in scalars(run).items() if tag.startswith("val/")}
    single = validate_in_one_process(run)
    assert set(logged) == set(single) == {"val/loss", "val/BLEU-1", "val/BLEU-2", "val/BLEU-3", "val/BLEU-4", "val/CIDEr"}
    for tag in logged:
        if tag == "val/loss":
            # Each image's loss comes from a batch of other images on each side, and float32
            # matrix products over other batch shapes may round the last bit differently.
            assert logged[tag] == pytest.approx(single[tag], rel=1e-6), tag
        else:  # scores of the same captions, each image counted once: exactly equal
            assert np.float32(logged[tag]) == np.float32(single[tag]), tag


def test_synchronised_batchnorm_on_cpu_processes_is_refused_at_start_up(tmp_path):
    trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, sync_batchnorm=True, logger=False,
                        default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"sync_batchnorm=true with processes on the CPU.*callbacks\.batchnorm\.mode=frozen"):
        BatchNormPolicy("batch").setup(trainer, None, "fit")
    BatchNormPolicy("batch").setup(  # without sync_batchnorm: per-process statistics, no error
        L.Trainer(accelerator="cpu", strategy="ddp", devices=2, logger=False, default_root_dir=tmp_path), None, "fit")


@pytest.mark.slow
def test_ddp_cpu_under_a_multirun_sweep_runs_each_job_on_two_processes(tmp_path):
    """Lightning starts the second process by re-running the command line, `-m` included; it
    joins the sweep's jobs one by one, so it must find the same sweep folder, which is named
    by the time. That process starts seconds later: the folder's time is the launch time
    that the first process hands down (capgen.training.config.launch_time), not the time now."""
    cmd = [sys.executable, "-m", "capgen.cli.train", "-m", "model=rnn,lstm", "trainer=ddp_cpu", "debug=fast", "test=false",
           "data.source.sizes={train:64,val:15,test:16}",
           "hydra.job.config.override_dirname.exclude_keys=[data.source.sizes,debug,test,trainer]"]
    done = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train").iterdir()  # one sweep folder for both processes
    assert sweep.name.startswith("multirun_")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_model=rnn", "1_model=lstm"]
    for job, decoder in zip(jobs, ("RNNDecoder", "LSTMDecoder")):
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # its second process joined this job
        last = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == 3 and last["hyper_parameters"]["net_config"]["decoder"]["_target_"].endswith(decoder)


@pytest.mark.slow
@pytest.mark.parametrize("at_step, every", [(3, 3), (5, 2)], ids=["epoch-end-checkpoint", "mid-epoch-checkpoint"])
def test_ddp_cpu_crash_and_resume_equals_one_uninterrupted_run(tmp_path, at_step, every):
    """Two epochs of 3 steps on two processes in one go, against a run that crashes on both
    processes at `at_step` and is resumed with `resume=`: the same weights, optimizer and
    schedule state bit for bit, and the same loss curve. Dropout makes each rank's random
    stream matter; the mid-epoch case resumes from step 4's checkpoint, so each rank's
    sampler must skip the batches it had already served."""
    run_args = [*DDP_RUN, "trainer.max_epochs=2", "model.decoder.dropout=0.5",
                f"callbacks.last_checkpoint.every_n_train_steps={every}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}

    def train_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "capgen.cli.train", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    whole, split = tmp_path / "whole", tmp_path / "split"
    done = train_cli(*run_args, f"hydra.run.dir={whole}")
    assert done.returncode == 0, done.stderr[-3000:]
    crash = ["+callbacks.crash._target_=helpers.crash_once.CrashOnce", f"+callbacks.crash.at_step={at_step}",
             f"+callbacks.crash.marker={tmp_path / 'crashed'}"]
    done = train_cli(*run_args, *crash, f"hydra.run.dir={split}")
    assert done.returncode != 0 and f"simulated crash at step {at_step}" in done.stderr
    assert {p.name for p in tmp_path.glob("crashed.*")} == {"crashed.0", "crashed.1"}  # both processes crashed
    done = train_cli(f"resume={split}")
    assert done.returncode == 0, done.stderr[-3000:]

    assert (split / "train_ddp_process_1.log").is_file()  # the resumed run had its second process too
    assert_same_training_state(checkpoint(split), checkpoint(whole))
    assert checkpoint(split)["global_step"] == 6
    assert scalars(split)["train/loss"] == scalars(whole)["train/loss"]


@pytest.mark.slow
def test_ddp_cpu_self_critical_training(tmp_path):
    """SCST needs nothing across processes beyond DDP's gradients: each rank samples and
    rewards its own images against the training references it holds."""
    run = tmp_path / "run"
    args = [*DDP_RUN, "model.module.objective=scst", "model.module.scst_samples=3", f"hydra.run.dir={run}"]
    done = subprocess.run([sys.executable, "-m", "capgen.cli.train", *args], cwd=tmp_path,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    logged = scalars(run)
    for tag in ("train/reward", "train/baseline", "train/sample_len"):
        assert [s for s, _ in logged[tag]] == [0, 1, 2], tag
