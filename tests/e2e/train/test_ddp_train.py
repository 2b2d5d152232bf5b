"""`trainer=ddp_cpu`: two gloo processes train and validate, score exactly like one process,
resume exactly, train self-critically on cached features and run under a multirun sweep."""

from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from capgen.lightning.callbacks import BatchNormPolicy
from capgen.lightning.module import CaptioningModule

from helpers.procs import capgen, why
from helpers.runs import assert_same_training_state, cheap, checkpoint, scalars

# 15 validation images in batches of 4 over 2 processes: Lightning's distributed sampler
# pads them to 16, so one image is decoded on both ranks and must be scored once.
DDP_RUN = cheap("trainer=ddp_cpu", "debug=fast", "model=lstm", "test=false", "data.source.sizes={train:64,val:15,test:16}",
                "data.batch_size=4", "trainer.limit_val_batches=1.0", "callbacks.batchnorm.mode=frozen", "logger=tensorboard")
# The run the tests share: two epochs of 3 steps, each on both processes' batches. Dropout
# makes each rank's random stream matter for the resume; last.ckpt every 2 steps, so a crash
# at step 5 resumes mid-epoch (from step 4) and each rank's sampler must skip the batches it
# had already served.
WHOLE = [*DDP_RUN, "trainer.max_epochs=2", "model.decoder.dropout=0.5", "callbacks.last_checkpoint.every_n_train_steps=2"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "whole"
    done = capgen("train", *WHOLE, f"hydra.run.dir={run}", cwd=run.parent)
    assert done.returncode == 0, why(done)
    return run


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
def test_ddp_cpu_trains_and_validates_like_one_process(whole):
    run = whole
    assert (run / "train_ddp_process_1.log").is_file()  # the second process ran, in the same run folder
    last = checkpoint(run)
    assert last["global_step"] == 6  # 2 epochs x 3 steps, each on both processes' batches

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
    that the first process hands down (capgen.config.registry.launch_time), not the time now."""
    done = capgen("train", "-m", "model=rnn,lstm", *cheap("trainer=ddp_cpu", "debug=fast", "test=false",
                  "data.source.sizes={train:64,val:15,test:16}",
                  "hydra.job.config.override_dirname.exclude_keys=[data.source.sizes,debug,test,trainer,logger,callbacks.caption_samples.num_samples,model.module.test.metrics]"),
                  cwd=tmp_path)
    assert done.returncode == 0, why(done)
    (sweep,) = (tmp_path / "outputs" / "train").iterdir()  # one sweep folder for both processes
    assert sweep.name.startswith("multirun_")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_model=rnn", "1_model=lstm"]
    for job, decoder in zip(jobs, ("RNNDecoder", "LSTMDecoder")):
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # its second process joined this job
        last = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == 3 and last["hyper_parameters"]["net_config"]["decoder"]["_target_"].endswith(decoder)


@pytest.mark.slow
def test_ddp_cpu_crash_and_resume_equals_one_uninterrupted_run(whole, tmp_path):
    """The shared run in one go, against the same run crashed on both processes at step 5 (in
    epoch 1; it resumes from step 4's checkpoint) and resumed with `resume=`: the same
    weights, optimizer and schedule state bit for bit, and the same loss curve."""
    split = tmp_path / "split"
    crash = ["+callbacks.crash._target_=helpers.crash_once.CrashOnce", "+callbacks.crash.at_step=5",
             f"+callbacks.crash.marker={tmp_path / 'crashed'}"]
    done = capgen("train", *WHOLE, *crash, f"hydra.run.dir={split}", cwd=tmp_path)
    assert done.returncode != 0 and "simulated crash at step 5" in done.stderr
    assert {p.name for p in tmp_path.glob("crashed.*")} == {"crashed.0", "crashed.1"}  # both processes crashed
    assert checkpoint(split)["global_step"] == 4
    done = capgen("train", f"resume={split}", cwd=tmp_path)
    assert done.returncode == 0, why(done)

    assert (split / "train_ddp_process_1.log").is_file()  # the resumed run had its second process too
    assert_same_training_state(checkpoint(split), checkpoint(whole))
    assert checkpoint(split)["global_step"] == 6
    assert scalars(split)["train/loss"] == scalars(whole)["train/loss"]


@pytest.mark.slow
def test_ddp_cpu_trains_self_critically_on_cached_features_with_a_trainable_encoder(tmp_path):
    """SCST needs nothing across processes beyond DDP's gradients: each rank samples and
    rewards its own images against the training references it holds. The default small_cnn
    trains with its decoder, but on cached features it never runs: its weights get no
    gradient, which DDP refuses unless it looks for unused parameters. One run checks both."""
    from capgen.commands.prepare import prepare

    from helpers.runs import compose_command

    cache, run = tmp_path / "cache", tmp_path / "run"
    prepare(compose_command("prepare", f"cache_dir={cache}", "features=true", "data.source.sizes={train:64,val:15,test:16}"))
    done = capgen("train", *DDP_RUN, "model.module.objective.name=scst", "model.module.objective.scst.samples=3",
                  f"data.cache_dir={cache}", "data.use_features=true", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, why(done)
    assert "trainer.strategy=ddp_find_unused_parameters_true" in (run / "train.log").read_text()
    assert checkpoint(run)["global_step"] == 3 and (run / "train_ddp_process_1.log").is_file()
    logged = scalars(run)
    for tag in ("train/reward", "train/baseline", "train/sample_len"):
        assert [s for s, _ in logged[tag]] == [0, 1, 2], tag
