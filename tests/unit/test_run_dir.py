"""Run folders' records (summary.json, error.txt), their atomic writes and lenient reads, the
run folder's lock, the best-epoch metrics, the TensorBoard run name, capgen-compare's table and
the optional extras' check, without training."""

import builtins
import errno
import fcntl
import json
import logging
import os
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import capgen.atomic as atomic
from capgen.training import config, lock, plugins
from capgen.training.callbacks import BestEpochMetrics
from capgen.training.compare import as_markdown, as_text, compare
from capgen.training.config import CONF_DIR
from capgen.training.lock import RunFolderInUse, named_run_dir, run_lock
from capgen.training.run_dir import (
    RunFailed,
    UnreadableRecord,
    best_checkpoint,
    find_runs,
    read_summary,
    run_recording_failure,
    write_summary,
)

from helpers.runs import snapshot


def make_run(path: Path, overrides: list[str], summary: dict | None = None) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 42\n")
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_best_epoch_metrics_keep_the_best_val_cider_epoch_and_survive_a_resume():
    callback = BestEpochMetrics()
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={})
    for cider, bleu in [(0.2, 0.1), (0.5, 0.3), (0.4, 0.4)]:
        trainer.callback_metrics = {"val/CIDEr": torch.tensor(cider), "val/BLEU-4": torch.tensor(bleu),
                                    "train/loss": torch.tensor(1.0)}
        callback.on_validation_end(trainer, None)
    assert callback.best == pytest.approx({"val/CIDEr": 0.5, "val/BLEU-4": 0.3})  # not the last epoch's

    resumed = BestEpochMetrics()
    resumed.load_state_dict(callback.state_dict())
    trainer.callback_metrics = {"val/CIDEr": torch.tensor(0.45), "val/BLEU-4": torch.tensor(0.5)}
    resumed.on_validation_end(trainer, None)
    assert resumed.best == pytest.approx({"val/CIDEr": 0.5, "val/BLEU-4": 0.3})

    trainer.sanity_checking = True  # the sanity check's scores are not an epoch's
    trainer.callback_metrics = {"val/CIDEr": torch.tensor(9.0)}
    resumed.on_validation_end(trainer, None)
    assert resumed.best["val/CIDEr"] == pytest.approx(0.5)


def test_tensorboard_run_name_is_the_jobs_overrides():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["model=lstm", "model.decoder.hidden_dim=512", "ckpt_path=/x.ckpt"],
                      return_hydra_config=True)
        long = compose("train", overrides=[f"+k{i}=" + "v" * 20 for i in range(12)], return_hydra_config=True)
        paths = compose("train", overrides=["data=coco2014", "data.root=/mnt/coco"], return_hydra_config=True)
    try:
        HydraConfig.instance().set_config(cfg)
        assert config.run_name() == "model.decoder.hidden_dim=512,model=lstm"  # ckpt_path left out
        # A path in a value: one folder, not data.root= / mnt / coco, for the run and a sweep job.
        HydraConfig.instance().set_config(paths)
        assert config.run_name() == "data.root=_mnt_coco,data=coco2014"
        OmegaConf.set_readonly(paths.hydra, False)
        paths.hydra.job.num = 3  # as Hydra sets it for a sweep's job 3
        assert paths.hydra.sweep.subdir == "3_data.root=_mnt_coco,data=coco2014"
        HydraConfig.instance().set_config(long)
        name = config.run_name()
        assert len(name) < 200 and name.startswith("+k0=vvvv")  # a path component must stay short
    finally:
        HydraConfig.instance().cfg = None
    assert config.run_name() == "default"  # no command line outside a Hydra app


def test_a_failing_run_leaves_its_traceback_and_a_failed_summary(tmp_path):
    run = make_run(tmp_path / "run", ["model=attn"])
    cfg = OmegaConf.create({"paths": {"output_dir": str(run)}})
    held = []

    def fail(cfg):
        model = torch.nn.Linear(2, 2)
        held.append(weakref.ref(model))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(RunFailed, match=r"OutOfMemoryError: CUDA out of memory.*error.txt") as raised:
        run_recording_failure(fail, cfg)
    assert read_summary(run) == {"status": "failed", "traceback": "error.txt",
                                 "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert "in fail" in (run / "error.txt").read_text()
    # The failed run's objects are not kept alive by the error Hydra holds until the sweep ends.
    assert raised.value.__context__ is None and held[0]() is None
    with pytest.raises(ValueError, match="the run failed.*give ckpt_path="):
        best_checkpoint(run)


def test_summary_names_the_best_checkpoint_relative_to_the_run(tmp_path):
    run = make_run(tmp_path / "run", [])
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch001-cider0.500.ckpt").write_bytes(b"")
    write_summary(run, {"val/CIDEr": 0.5, "lr-AdamW/pg1": 1e-3}, str(run / "checkpoints" / "epoch001-cider0.500.ckpt"))
    assert read_summary(run)["metrics"] == {"val/CIDEr": 0.5}  # the run's scores, not the optimiser's state
    moved = tmp_path / "copied"
    run.rename(moved)  # e.g. copied off the cluster
    assert best_checkpoint(moved) == moved / "checkpoints" / "epoch001-cider0.500.ckpt"

    elsewhere = tmp_path / "store" / "best.ckpt"  # callbacks.model_checkpoint.dirpath set outside the run
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"")
    write_summary(moved, {}, str(elsewhere))
    assert best_checkpoint(moved) == elsewhere


def test_a_malformed_summary_is_named(tmp_path):
    run = make_run(tmp_path / "run", [])
    (run / "summary.json").write_text("{")
    with pytest.raises(UnreadableRecord, match=r"run/summary.json: cannot be read as JSON"):
        read_summary(run)
    (run / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {"val/CIDEr": "high"}}))
    with pytest.raises(UnreadableRecord, match=r"run/summary.json: its metrics are not a mapping of names to numbers"):
        read_summary(run)


def half_written(summary: dict) -> str:
    """The first half of summary.json as written before records were atomic: a write cut off."""
    text = json.dumps(summary, indent=2)
    return text[: len(text) // 2]


def test_compare_lists_unreadable_records_as_such_and_shows_the_other_runs(tmp_path):
    done = {"status": "completed", "metrics": {"val/CIDEr": 0.8}, "best_checkpoint": None}
    make_run(tmp_path / "0_lr=1", ["model.module.optimizer.lr=1"], done)
    torn = make_run(tmp_path / "1_lr=2", ["model.module.optimizer.lr=2"])
    (torn / "summary.json").write_text(half_written(done))
    make_run(tmp_path / "2_lr=3", ["model.module.optimizer.lr=3"], {"status": "exploded"})
    bad_yaml = make_run(tmp_path / "3_lr=4", [], done)
    (bad_yaml / ".hydra" / "overrides.yaml").write_text("- model.module.optimizer.lr=4\n- [unclosed\n")
    make_run(tmp_path / "4_lr=5", ["model.module.optimizer.lr=5"], {**done, "metrics": {"val/CIDEr": 0.9}})

    table = compare([tmp_path], ["val/CIDEr"])
    assert [r[-3:] for r in table.rows[:2]] == [["completed", "0.9000", "4_lr=5"], ["completed", "0.8000", "0_lr=1"]]
    assert len(table.rows) == 2  # unreadable runs are no rows (their settings make no columns): listed below
    assert table.notes[0].startswith(f"1_lr=2: unreadable: {torn / 'summary.json'}: cannot be read as JSON (")
    assert "2_lr=3: unreadable: " in table.notes[1] and "needs status completed, failed or interrupted" in table.notes[1]
    assert table.notes[2].startswith(f"3_lr=4: unreadable: {bad_yaml / '.hydra' / 'overrides.yaml'}: cannot be read as YAML")
    text = as_text(table).splitlines()
    assert text[text.index("runs that did not complete:") + 1].startswith("  1_lr=2: unreadable: ")
    assert f"- 1_lr=2: unreadable: {torn / 'summary.json'}" in as_markdown(table)


def test_eval_of_a_run_with_a_half_written_summary_says_what_is_wrong_and_what_to_give(tmp_path):
    run = make_run(tmp_path / "run", [])
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "summary.json").write_text(half_written({"status": "completed", "metrics": {"val/CIDEr": 0.5}}))
    with pytest.raises(ValueError, match=r"run=.*/run: its best checkpoint is named in summary.json, which is unreadable: "
                                         r".*/run/summary.json: cannot be read as JSON .*give ckpt_path=<file> instead; "
                                         r".*checkpoints holds \['last.ckpt'\]") as raised:
        best_checkpoint(run)
    assert "\n" not in str(raised.value)


def test_records_are_replaced_whole_and_leave_no_temporary(tmp_path):
    run = make_run(tmp_path / "run", [])
    write_summary(run, {"val/CIDEr": 0.25}, None)
    write_summary(run, {"val/CIDEr": 0.5}, None)
    assert read_summary(run)["metrics"] == {"val/CIDEr": 0.5}
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "summary.json"]


class DiskFills:
    """A file whose write puts a few bytes down and then finds the disk full (or read-only)."""

    def __init__(self, f, code: int):
        self.f, self.code = f, code

    def write(self, data):
        self.f.write(bytes(data[:10]))
        raise OSError(self.code, os.strerror(self.code))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)


@pytest.mark.parametrize("code, kind", [(errno.ENOSPC, OSError), (errno.EACCES, PermissionError)])
def test_a_full_disk_or_a_read_only_folder_names_the_record_and_keeps_the_old_one(tmp_path, monkeypatch, code, kind):
    run = make_run(tmp_path / "run", [])
    write_summary(run, {"val/CIDEr": 0.25}, None)
    before = (run / "summary.json").read_bytes()
    monkeypatch.setattr(atomic, "open", lambda p, mode: DiskFills(builtins.open(p, mode), code), raising=False)
    with pytest.raises(kind) as raised:
        write_summary(run, {"val/CIDEr": 0.5}, None)
    message = str(raised.value)
    assert message.startswith(f"could not write {run / 'summary.json'}: {os.strerror(code)}. Free space on its disk, or "
                              f"make {run} writable") and "\n" not in message
    assert raised.value.errno == code
    assert (run / "summary.json").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "summary.json"]  # no summary.json.tmp


def test_a_run_that_fails_on_a_full_disk_still_reports_its_own_error(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", [])
    monkeypatch.setattr(atomic, "open", lambda p, mode: DiskFills(builtins.open(p, mode), errno.ENOSPC), raising=False)

    def fail(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "checkpoints" / "last.ckpt"))

    cfg = OmegaConf.create({"paths": {"output_dir": str(run)}})
    with pytest.raises(RunFailed, match=r"^OSError: \[Errno 28\] No space left on device: '.*last.ckpt' \(run .*; its records "
                                        r"could not be written: could not write .*/run/error.txt: No space left on device\."):
        run_recording_failure(fail, cfg)
    assert sorted(p.name for p in run.iterdir()) == [".hydra"]  # neither a torn error.txt nor a .tmp


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the EACCES case above covers the message")
def test_a_record_in_a_read_only_folder_is_a_permission_error_naming_it(tmp_path):
    run = make_run(tmp_path / "run", [])
    run.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=f"could not write {run / 'summary.json'}: Permission denied"):
            write_summary(run, {}, None)
    finally:
        run.chmod(0o755)
    assert sorted(p.name for p in run.iterdir()) == [".hydra"]


def test_a_run_folder_locked_by_another_holder_is_refused_naming_it_and_left_as_it_was(tmp_path):
    run = make_run(tmp_path / "run", ["model=lstm"])
    (run / ".lock").write_text("4242 gpu07\n")  # the holder named itself
    fd = os.open(run, os.O_RDONLY)  # another open of the folder: another holder
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    before = snapshot(run)
    try:
        with pytest.raises(RunFolderInUse) as raised, run_lock(run):
            pass
    finally:
        os.close(fd)  # the holder ends: its lock goes with it
    message = str(raised.value)
    assert message.startswith(f"{run} is in use: capgen-train process 4242 on host gpu07 is writing into it")
    assert "kill 4242 on gpu07" in message and "hydra.run.dir=<new folder>" in message and "\n" not in message
    assert snapshot(run) == before
    with run_lock(run):  # free again
        assert (run / ".lock").read_text().split()[0] == str(os.getpid())


def test_a_run_lock_is_held_once_per_process_and_released_after_the_job(tmp_path):
    run = tmp_path / "run"
    assert lock.hold(run) and not lock.hold(run)  # the second take, e.g. the job's after main()'s, is a no-op
    with run_lock(run):
        pass
    assert run.resolve() in lock._held  # a lock taken before the job outlives it
    lock.release(run)
    with run_lock(run):
        assert run.resolve() in lock._held
    assert run.resolve() not in lock._held
    fd = os.open(run, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it now
    os.close(fd)


def test_a_file_system_without_locks_warns_and_lets_the_run_go_on(tmp_path, monkeypatch, caplog):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING), run_lock(tmp_path / "run"):
        pass
    assert "this file system cannot lock folders" in caplog.text and str(tmp_path / "run") in caplog.text


def test_the_folder_a_command_line_names_is_the_one_locked_before_hydra_starts(tmp_path):
    run = make_run(tmp_path / "run, with a comma", [])
    other = make_run(tmp_path / "other", [])
    assert named_run_dir([f"resume='{run}'", "trainer.max_epochs=9"]) == run
    assert named_run_dir([f"resume='{run}'", f"hydra.run.dir={other}"]) == run  # resume= decides (resume_argv)
    assert named_run_dir([f"hydra.run.dir={other}"]) == other
    assert named_run_dir(["resume=null", f"hydra.run.dir={other}"]) == other
    assert named_run_dir([f"hydra.run.dir={tmp_path / 'new'}"]) is None  # made and locked when the job starts
    assert named_run_dir(["-m", f"hydra.run.dir={other}", "model=rnn,lstm"]) is None  # each job its own folder
    assert named_run_dir([f"hydra.run.dir={other}" + "/${now:%H}"]) is None
    assert named_run_dir(["model=lstm"]) is None


def test_compare_shows_varying_overrides_and_puts_failed_and_unfinished_runs_last(tmp_path):
    done = {"status": "completed", "metrics": {"val/CIDEr": 0.8, "test/CIDEr": 0.7}}
    for i in range(11):  # job 10 sorts after job 9
        make_run(tmp_path / f"{i}_lr={i}", ["debug=fast", f"model.module.optimizer.lr={i}"], {**done, "metrics": {"val/CIDEr": i / 10}})
    make_run(tmp_path / "11_lr=bad", ["debug=fast", "model.module.optimizer.lr=bad"], {"status": "failed", "error": "ValueError: bad lr"})
    make_run(tmp_path / "12_lr=slow", ["debug=fast", "model.module.optimizer.lr=slow"])
    assert [p.name for p in find_runs(tmp_path)][9:11] == ["9_lr=9", "10_lr=10"]

    table = compare([tmp_path], ["val/CIDEr", "test/CIDEr"])
    assert table.common == ["debug=fast"]
    assert table.header == ["model.module.optimizer.lr", "status", "val/CIDEr", "test/CIDEr", "run"]
    assert table.rows[0] == ["10", "completed", "1.0000", "-", "10_lr=10"]
    assert [r[1] for r in table.rows[-2:]] == ["completed", "unfinished"]  # a failed run is no row: a note below
    assert "11_lr=bad: failed: ValueError: bad lr" in table.notes
    assert any(n.startswith("12_lr=slow: unfinished: no summary.json") for n in table.notes) and len(table.notes) == 2
    assert as_text(table).splitlines()[0] == "all runs: debug=fast"
    markdown = as_markdown(table)
    assert "| model.module.optimizer.lr | status | val/CIDEr | test/CIDEr | run |\n|---|---|---|---|---|\n| 10 | completed |" in markdown
    with pytest.raises(SystemExit, match="no capgen-train runs"):
        compare([tmp_path / "0_lr=0" / ".hydra"], ["val/CIDEr"])


def test_a_missing_optional_plugin_names_the_extra_to_install(monkeypatch):
    monkeypatch.setattr(plugins.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"hparams_search=attn_optuna needs .*pip install -e \"\.\[sweep\]\""):
        plugins.require_plugins(["model=attn", "hparams_search=attn_optuna"])
    with pytest.raises(SystemExit, match=r"pip install -e \"\.\[cluster\]\""):
        plugins.require_plugins(["-m", "hydra/launcher=slurm"])
    plugins.require_plugins(["-m", "model=rnn,lstm", "hparams_search=null"])  # nothing optional asked for
