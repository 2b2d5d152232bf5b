"""Run folders' records (summary.json, error.txt): their atomic writes, lenient reads, and a failing run's
record of its failure, without training."""

import builtins
import errno
import json
import os
import re
import weakref

import pytest
import torch
from omegaconf import OmegaConf

import capgen.atomic as atomic
from capgen.runs.folders import best_checkpoint
from capgen.runs.records import (
    RunFailed,
    UnreadableRecord,
    keep_before_resume,
    measured_on_stop,
    read_summary,
    run_recording_failure,
    write_summary,
)

from helpers.runs import make_run_folder, snapshot


def test_a_failing_run_leaves_its_traceback_and_a_failed_summary(tmp_path):
    run = make_run_folder(tmp_path / "run", ["model=attn"])
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
    run = make_run_folder(tmp_path / "run", [])
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
    run = make_run_folder(tmp_path / "run", [])
    (run / "summary.json").write_text("{")
    with pytest.raises(UnreadableRecord, match=r"run/summary.json: cannot be read as JSON"):
        read_summary(run)
    (run / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {"val/CIDEr": "high"}}))
    with pytest.raises(UnreadableRecord, match=r"run/summary.json: its metrics are not a mapping of names to numbers"):
        read_summary(run)


def test_records_are_replaced_whole_and_leave_no_temporary(tmp_path):
    run = make_run_folder(tmp_path / "run", [])
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
    run = make_run_folder(tmp_path / "run", [])
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
    run = make_run_folder(tmp_path / "run", [])
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
    run = make_run_folder(tmp_path / "run", [])
    run.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=f"could not write {run / 'summary.json'}: Permission denied"):
            write_summary(run, {}, None)
    finally:
        run.chmod(0o755)
    assert sorted(p.name for p in run.iterdir()) == [".hydra"]


def _ctrl_c_in_lightning(cfg):
    """What Lightning does with a Ctrl-C inside fit or test: a graceful shutdown, then sys.exit(1)."""
    import sys

    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        sys.exit(1)


def _ctrl_c_outside_lightning(cfg):
    raise KeyboardInterrupt  # e.g. while the data set is indexed, before fit starts


@pytest.mark.parametrize("ctrl_c", [_ctrl_c_in_lightning, _ctrl_c_outside_lightning])
def test_a_ctrl_c_is_recorded_as_an_interruption_with_the_shells_exit_code(tmp_path, ctrl_c):
    """Ctrl-C ends a run as SIGTERM does: summary.json says interrupted (and how to go on), exit
    status 130 (128 + SIGINT); with a last.ckpt the resume command, without one no resume."""
    run = make_run_folder(tmp_path / "0_model=attn,data.source.sizes={train:8}", ["model=attn"])  # a sweep job's
    cfg = OmegaConf.create({"paths": {"output_dir": str(run)}})
    with pytest.raises(SystemExit) as ended:
        run_recording_failure(ctrl_c, cfg)
    assert ended.value.code == 130
    assert read_summary(run) == {"status": "interrupted", "signal": "SIGINT", "checkpoint": None}
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit) as ended:
        run_recording_failure(ctrl_c, cfg)
    assert ended.value.code == 130
    assert read_summary(run) == {"status": "interrupted", "signal": "SIGINT", "checkpoint": "checkpoints/last.ckpt",
                                 "resume": f"capgen-train resume='{run}'"}  # quoted for the shell


def test_an_ordinary_exit_is_not_taken_for_an_interruption(tmp_path):
    import sys

    run = make_run_folder(tmp_path / "run", [])
    cfg = OmegaConf.create({"paths": {"output_dir": str(run)}})
    with pytest.raises(SystemExit) as ended:
        run_recording_failure(lambda cfg: sys.exit(3), cfg)
    assert ended.value.code == 3 and read_summary(run) is None


def _resumed_run(tmp_path, earlier="completed"):
    """A completed (or failed) run with a checkpoint, kept before a resume that then rewrites its
    overrides as Hydra does."""
    summary = ({"status": "completed", "metrics": {"val/CIDEr": 0.5}} if earlier == "completed"
               else {"status": "failed", "error": "OSError: disk full", "traceback": "error.txt"})
    run = make_run_folder(tmp_path / "run", ["model=lstm"], summary)
    if earlier == "failed":
        (run / "error.txt").write_text("Traceback: the run's own failure\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"step 10")
    before = snapshot(run)
    keep_before_resume(run, f"capgen-train resume={run} data.batch_size=0")
    OmegaConf.save(OmegaConf.create(["model=lstm", "data.batch_size=0"]), run / ".hydra" / "overrides.yaml")
    return run, before


def _fail(cfg):
    raise ValueError("data.batch_size=0: must be a whole number of at least 1")


@pytest.mark.parametrize("earlier", ["completed", "failed"])
def test_a_resume_that_fails_before_changing_a_checkpoint_leaves_the_run_as_it_was(tmp_path, earlier):
    """The run's records as they were, its own error.txt too; the resume's failure beside them in
    error.resume-<time>.txt and noted in summary.json, with the resume to run again."""
    run, before = _resumed_run(tmp_path, earlier)
    command = f"capgen-train resume={run} data.batch_size=0"
    with pytest.raises(RunFailed, match=r"the run folder was left as it was \(.*\): with the cause fixed, run the "
                                        rf"resume again: {re.escape(command)}\)$"):
        run_recording_failure(_fail, OmegaConf.create({"paths": {"output_dir": str(run)}}))
    after = snapshot(run)
    (traceback_file,) = [name for name in after if name.startswith("error.resume-")]
    assert re.fullmatch(r"error\.resume-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.txt", traceback_file)
    assert "data.batch_size=0" in after.pop(traceback_file).decode()  # the traceback, in a file of its own
    summary = json.loads(after.pop("summary.json"))
    assert summary.pop("resume_failed") == {"error": "ValueError: data.batch_size=0: must be a whole number of at least 1",
                                            "traceback": traceback_file, "command": command}
    assert summary == json.loads(before.pop("summary.json"))  # the run's own status and scores
    assert after == before  # its error.txt if it had one, overrides.yaml without the failed value, no before-resume copy


def test_a_resume_that_fails_after_writing_a_checkpoint_is_recorded_as_failed(tmp_path):
    run, _ = _resumed_run(tmp_path)

    def trains_then_fails(cfg):
        (run / "checkpoints" / "last.ckpt").write_bytes(b"step 11")
        _fail(cfg)

    with pytest.raises(RunFailed):
        run_recording_failure(trains_then_fails, OmegaConf.create({"paths": {"output_dir": str(run)}}))
    assert read_summary(run)["status"] == "failed"
    assert "data.batch_size=0" in (run / ".hydra" / "overrides.yaml").read_text()  # what the checkpoint was trained with


def test_a_run_that_stops_after_a_best_epoch_records_it_and_eval_compare_and_demo_take_it(tmp_path, caplog):
    """Interrupted (or failed) after its best epoch so far: summary.json keeps that checkpoint and the
    scores (train/* and the best epoch's val/*; no test/* of a test cut off), the status stays
    interrupted, and run= (capgen-eval, capgen-demo) takes the checkpoint, saying the run did not finish."""
    import logging
    import signal

    from capgen.commands.compare import load_run
    from capgen.lightning.callbacks.faults import RunInterrupted

    run = make_run_folder(tmp_path / "run", ["model=rnn"])
    (run / "checkpoints").mkdir()
    best = run / "checkpoints" / "epoch000-best0.180.ckpt"
    for ckpt in (best, run / "checkpoints" / "last.ckpt"):
        ckpt.write_bytes(b"")
    so_far = {"train/loss": 2.5, "val/CIDEr": 0.18, "val/BLEU-4": 0.05, "lr-AdamW": 1e-3, "test/CIDEr": 0.01}
    cfg = OmegaConf.create({"paths": {"output_dir": str(run)}})

    def stops(error: BaseException):
        def fn(cfg):
            with measured_on_stop(run, lambda: (so_far, str(best))):
                raise error
        return fn

    with pytest.raises(SystemExit) as ended:
        run_recording_failure(stops(RunInterrupted(signal.SIGTERM, saved=True)), cfg)
    assert ended.value.code == 143
    scores = {"train/loss": 2.5, "val/CIDEr": 0.18, "val/BLEU-4": 0.05}
    assert read_summary(run) == {"status": "interrupted", "signal": "SIGTERM", "checkpoint": "checkpoints/last.ckpt",
                                 "resume": f"capgen-train resume={run}", "metrics": scores,
                                 "best_checkpoint": "checkpoints/epoch000-best0.180.ckpt"}
    with caplog.at_level(logging.WARNING, logger="capgen.runs.folders"):
        assert best_checkpoint(run) == best
    assert (f"run={run}: the run was interrupted (SIGTERM) before it finished: using its best checkpoint so far, "
            f"checkpoints/epoch000-best0.180.ckpt; capgen-train resume={run} continues it") in caplog.text
    row = load_run(run)
    assert row.status == "interrupted" and row.metrics == scores and row.error == (
        f"SIGTERM; best so far: checkpoints/epoch000-best0.180.ckpt; continue with capgen-train resume={run}")

    with pytest.raises(RunFailed):
        run_recording_failure(stops(ValueError("boom")), cfg)
    summary = read_summary(run)
    assert summary["status"] == "failed" and summary["metrics"] == scores
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="capgen.runs.folders"):
        assert best_checkpoint(run) == best
    assert (f"run={run}: the run failed (ValueError: boom) before it finished: using its best checkpoint so far, "
            f"checkpoints/epoch000-best0.180.ckpt; with the cause fixed, capgen-train resume={run} continues it") in caplog.text
    row = load_run(run)  # a row of capgen-compare's as the interrupted run was, its status failed
    assert row.status == "failed" and row.metrics == scores and row.error == (
        f"best so far: checkpoints/epoch000-best0.180.ckpt; fix the cause, then continue with capgen-train resume={run}; "
        "error: ValueError: boom")

    # A stop before any best epoch (or a summary of an earlier capgen) names none: refused, in words.
    (run / "summary.json").write_text(json.dumps({"status": "interrupted", "signal": "SIGTERM",
                                                  "resume": f"capgen-train resume={run}"}))
    with pytest.raises(ValueError, match=r"the run was interrupted, so it has no best checkpoint recorded in summary.json"):
        best_checkpoint(run)
