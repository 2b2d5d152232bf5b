"""Resumes that cannot go on are refused before anything in the run folder is written, and a
damaged last.ckpt falls back to the newest checkpoint of the run that loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from capgen.commands.train.fit import train
from capgen.config.resume_argv import resume_argv

from helpers.commands import main_in_process
from helpers.procs import capgen
from helpers.runs import snapshot, train_run


@pytest.fixture
def run(tiny_lstm_run, copy_run) -> Path:
    """A copy of the session's finished tiny LSTM run (model=lstm, 1 epoch)."""
    return copy_run(tiny_lstm_run, "run")


@pytest.mark.slow
def test_a_refused_resume_leaves_the_run_byte_for_byte_and_the_plain_resume_still_works(run, tmp_path, monkeypatch):
    before = snapshot(run)
    for change in (["model.decoder.hidden_dim=512"], ["model=attn"]):  # refused by main() in this process
        said = main_in_process("train", f"resume={run}", *change, cwd=tmp_path, monkeypatch=monkeypatch)
        assert isinstance(said, str), said  # SystemExit with the paragraph: exit status 1
        assert "would build another network than the run trained" in said
        assert f"capgen-train resume={run}" in said  # the command that works
        assert snapshot(run) == before, change
    done = capgen("train", f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_a_misspelt_override_on_resume_is_refused_before_any_write(run):
    before = snapshot(run)
    with pytest.raises(Exception, match="hiden_dim"):
        resume_argv([f"resume={run}", "model.decoder.hiden_dim=3"])
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_damaged_last_ckpt_falls_back_to_the_newest_checkpoint_that_loads(run, tmp_path):
    from capgen.config.resume_argv import said_before_logging

    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy that stopped half-way
    [best] = [p for p in (run / "checkpoints").glob("epoch*.ckpt")]
    args = resume_argv([f"resume={run}", "trainer.max_epochs=2"])
    assert f'ckpt_path="{best}"' in args
    [warning] = said_before_logging()  # left for the job to log
    assert "is damaged" in warning and best.name in warning and said_before_logging() == []
    done = capgen("train", f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    # Said once on the console, and in the run's own log, where it is read later.
    assert (done.stdout + done.stderr).count("is damaged") == 1
    assert f"{last} is damaged" in (run / "train.log").read_text()


def test_no_loadable_checkpoint_names_the_command_that_works(run):
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"not a checkpoint")
    before = snapshot(run)
    with pytest.raises(ValueError) as err:
        resume_argv([f"resume={run}"])
    message = str(err.value)
    assert "No other checkpoint" in message and "start it again without resume=" in message and "model=lstm" in message
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_copied_run_resumes_as_itself_and_keeps_one_best_checkpoint(tmp_path):
    # Judged by val/loss (it falls at every epoch here), so the resumed epochs make new bests.
    original = train_run(tmp_path / "original", "model=lstm", "test=false", "monitor=val/loss", "monitor_mode=min")
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    before = snapshot(original)
    done = capgen("train", f"resume={copy}", "trainer.max_epochs=3", "test=true", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert snapshot(original) == before  # the copy never reached into the original
    bests = sorted(p.name for p in (copy / "checkpoints").glob("epoch*.ckpt"))
    assert len(bests) == 1 and bests[0].startswith("epoch002"), bests  # save_top_k=1 across the resume
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["best_checkpoint"] == f"checkpoints/{bests[0]}"


def test_a_bad_value_on_resume_is_refused_before_any_write(run):
    # Found by the checks a new run makes before it builds anything, and by the data module's
    # constructor; refused once the job had started, the value was saved in overrides.yaml.
    from capgen.cli.train import main
    from capgen.commands.train import check_train_config

    before = snapshot(run)
    for bad, named in (("data.batch_size=0", "data.batch_size=0"), ("monitor_mode=up", "monitor_mode='up'")):
        with pytest.raises(ValueError) as err:
            resume_argv([f"resume={run}", bad], check_train_config)
        message = str(err.value)
        assert named in message and "Nothing in the run folder was changed" in message
        assert f"capgen-train resume={run})" in message
        assert snapshot(run) == before, bad
    # capgen-train's main hands its checks down to the resume's (the config layer cannot import them)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["capgen-train", f"resume={run}", "monitor_mode=up"])
        with pytest.raises(SystemExit):
            main()
    assert snapshot(run) == before


def test_an_optimizer_or_schedule_change_on_resume_is_refused_naming_init_from(run):
    # Lightning restores the optimizer and schedule from the checkpoint: the change would be recorded, not used.
    before = snapshot(run)
    for change in ("model.module.optimizer.lr=1e-4", "model.module.scheduler.name=none"):
        with pytest.raises(ValueError) as err:
            resume_argv([f"resume={run}", change])
        assert change.partition("=")[0] in str(err.value) and f"init_from={run}" in str(err.value)
        assert snapshot(run) == before, change
    resume_argv([f"resume={run}", "model.module.optimizer.lr=0.002", "monitor=val/loss", "monitor_mode=min"])  # unchanged


def test_a_relative_data_root_from_another_working_directory_is_refused(run, tmp_path, monkeypatch):
    started_in = tmp_path / "started_in"
    (started_in / "ok").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["model=lstm", "data=custom", "data.root=ok"]), run / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(started_in)}}}), run / ".hydra" / "hydra.yaml")
    before = snapshot(run)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        resume_argv([f"resume={run}"])
    message = str(err.value)
    assert f"started in {started_in}" in message and "data.root=ok" in message
    assert f"cd {started_in} && capgen-train resume={run}" in message and f"data.root={started_in / 'ok'}" in message
    assert snapshot(run) == before


def test_a_new_run_from_a_checkpoint_refuses_another_schedule(tiny_lstm_run, make_cfg):
    # After its cosine schedule ended, the restored optimizer's lr is 0: scheduler.name=none would train at lr 0.
    ckpt = tiny_lstm_run / "checkpoints" / "last.ckpt"
    cfg = make_cfg("model=lstm", "data.source.sizes={train:64,val:12,test:16}", f"ckpt_path={ckpt}", "trainer.max_epochs=2", "model.module.scheduler.name=none")
    with pytest.raises(ValueError, match=rf"model.module.scheduler.name=none \(the checkpoint's: cosine\).*init_from={ckpt}"):
        train(cfg)


@pytest.mark.parametrize("last, test", [("whole", "test=true"), ("damaged", "test=true"), ("whole", "test=false")])
def test_a_resume_that_trains_nothing_keeps_the_train_metrics_the_run_measured(run, last, test):
    """A resume of a completed run (or from the fallback for a damaged last.ckpt, here as new as
    it) takes no step and tests its best again: summary.json still has the run's train/* (this
    process measured none), and its val/* and test/* as before. With test=false it tests nothing:
    the test/* (and their decode settings, and test_captions.jsonl) of the best checkpoint, which
    is the same file, are kept."""
    before = json.loads((run / "summary.json").read_text())
    assert {"train/loss", "train/xent"} <= set(before["metrics"]) and "test/CIDEr" in before["metrics"]
    captions = (run / "test_captions.jsonl").read_bytes()
    (run / "error.txt").write_text("Traceback: the failure a resume gets over\n")  # as a failed run leaves it
    if last == "damaged":
        ckpt = run / "checkpoints" / "last.ckpt"
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    args = [a for a in resume_argv([f"resume={run}", test]) if not a.startswith("hydra.run.dir=")]
    assert any(a.startswith("ckpt_path=") for a in args) == (last == "damaged")
    train(_composed(args, run))
    after = json.loads((run / "summary.json").read_text())
    assert after["status"] == "completed" and after["best_checkpoint"] == before["best_checkpoint"]
    # A completed run's folder holds no traceback of a failure it got over: set aside, not deleted.
    assert not (run / "error.txt").exists() and len(list((run / ".hydra").glob("before-resume-*/error.txt"))) == 1
    assert after["metrics"] == pytest.approx(before["metrics"])
    assert after["test_decode"] == before["test_decode"]
    if test == "test=false":
        assert (run / "test_captions.jsonl").read_bytes() == captions  # untouched


def test_a_resume_with_test_false_that_makes_a_new_best_drops_the_test_of_the_old_one(run):
    """The run's test/* and test_captions.jsonl were measured on its best checkpoint; a resume
    that trains on to a new best with test=false tests nothing: they no longer describe the run's
    best and are not kept (capgen-compare --paired then says how to test it). The new best:
    judged now by val/loss, the checkpoint callback keeps no best of it, so the first validation
    makes one."""
    before = json.loads((run / "summary.json").read_text())
    captions = (run / "test_captions.jsonl").read_bytes()
    args = resume_argv([f"resume={run}", "trainer.max_epochs=2", "test=false", "monitor=val/loss", "monitor_mode=min"])
    train(_composed([a for a in args if not a.startswith("hydra.run.dir=")], run))
    after = json.loads((run / "summary.json").read_text())
    assert after["status"] == "completed" and after["best_checkpoint"] != before["best_checkpoint"]
    assert (run / after["best_checkpoint"]).is_file() and "val/loss" in after["metrics"]
    assert not any(k.startswith("test/") for k in after["metrics"]) and "test_decode" not in after
    assert not (run / "test_captions.jsonl").exists()
    [kept] = (run / ".hydra").glob("before-resume-*/test_captions.jsonl")  # moved aside, not deleted
    assert kept.read_bytes() == captions


def test_a_resume_on_captions_with_new_words_warns_that_they_train_as_unk(run, monkeypatch, caplog):
    """The run keeps its word ids; a word the data gained since it started is <unk> in every
    target: said once, not left to be found in the scores."""
    import logging

    from capgen.data.shapes import ShapesSource

    said = ShapesSource.captions
    monkeypatch.setattr(ShapesSource, "captions", lambda self, i: [c + " zebra" for c in said(self, i)])  # an edited data set
    args = [a for a in resume_argv([f"resume={run}"]) if not a.startswith("hydra.run.dir=")]
    with caplog.at_level(logging.WARNING, logger="capgen.commands.train.fit"):
        train(_composed(args, run))
    [warning] = [r.getMessage() for r in caplog.records if "<unk>" in r.getMessage()]
    assert warning.startswith("the training captions hold 1 word(s) that the vocabulary of the checkpoint") and "e.g. zebra:" in warning


def _composed(args: list[str], run: Path):
    """The train config of a resume's rewritten command line, writing into `run`."""
    from hydra import compose, initialize_config_dir

    from capgen.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*args, f"paths.output_dir={run}"])


def _resume_stopped_by(run, monkeypatch, method: str, signum: int) -> tuple[int, dict]:
    """Resume `run` for one more epoch, sending this process `signum` in the first call of
    CaptioningModule.`method` (training_step, test_step): the exit status and summary.json."""
    import os

    from hydra import compose, initialize_config_dir

    from capgen.config import CONF_DIR
    from capgen.lightning.module import CaptioningModule
    from capgen.runs.records import run_recording_failure

    step = getattr(CaptioningModule, method)

    def signalled(self, batch, batch_idx):
        os.kill(os.getpid(), signum)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(CaptioningModule, method, signalled)
    args = [a for a in resume_argv([f"resume={run}", "trainer.max_epochs=2"]) if not a.startswith("hydra.run.dir=")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*args, f"paths.output_dir={run}"])
    with pytest.raises(SystemExit) as ended:
        run_recording_failure(train, cfg)
    return ended.value.code, json.loads((run / "summary.json").read_text())


def test_a_run_interrupted_after_its_best_epoch_records_it_for_eval_and_compare(run, monkeypatch):
    """SIGTERM in the epoch after the best one: the interrupted summary.json names the best
    checkpoint and its val scores (run= and capgen-compare take them), with train/* so far."""
    import signal

    from capgen.runs.folders import best_checkpoint

    before = json.loads((run / "summary.json").read_text())
    # as a scheduler sends it; StopOnSignal stops after this step
    code, summary = _resume_stopped_by(run, monkeypatch, "training_step", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert summary["status"] == "interrupted" and summary["best_checkpoint"] == before["best_checkpoint"]
    assert {k: v for k, v in summary["metrics"].items() if k.startswith("val/")} == pytest.approx(
        {k: v for k, v in before["metrics"].items() if k.startswith("val/")})
    assert "train/loss" in summary["metrics"] and not any(k.startswith("test/") for k in summary["metrics"])
    assert best_checkpoint(run) == run / before["best_checkpoint"]


def test_a_run_interrupted_during_its_final_test_keeps_its_train_metrics(run, monkeypatch):
    """Stopped while the best checkpoint is tested (where a scheduler's time limit often falls;
    Ctrl-C here, as the suite's SIGTERM handler turns a SIGTERM into in this process): the
    interrupted summary.json keeps the train/* the training measured (the test loop had reset
    the trainer's metrics) with the best epoch's val/*."""
    import signal

    code, summary = _resume_stopped_by(run, monkeypatch, "test_step", signal.SIGINT)
    assert code == 128 + signal.SIGINT
    assert summary["status"] == "interrupted" and summary["best_checkpoint"]
    assert {"train/loss", "train/xent", "val/CIDEr"} <= set(summary["metrics"])
    assert not any(k.startswith("test/") for k in summary["metrics"])
