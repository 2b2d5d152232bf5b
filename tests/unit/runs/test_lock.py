"""One writer per run folder: the run folder's lock, and the folder a command line names."""

import errno
import fcntl
import logging
import os

import pytest

from capgen.config.argv import named_run_dir
from capgen.runs import lock
from capgen.runs.lock import RunFolderInUse, run_lock

from helpers.runs import make_run_folder, snapshot


def test_a_run_folder_locked_by_another_holder_is_refused_naming_it_and_left_as_it_was(tmp_path):
    run = make_run_folder(tmp_path / "run", ["model=lstm"])
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
    run = make_run_folder(tmp_path / "run, with a comma", [])
    other = make_run_folder(tmp_path / "other", [])
    assert named_run_dir([f"resume='{run}'", "trainer.max_epochs=9"]) == run
    assert named_run_dir([f"resume='{run}'", f"hydra.run.dir={other}"]) == run  # resume= decides (resume_argv)
    assert named_run_dir([f"hydra.run.dir={other}"]) == other
    assert named_run_dir(["resume=null", f"hydra.run.dir={other}"]) == other
    assert named_run_dir([f"hydra.run.dir={tmp_path / 'new'}"]) is None  # made and locked when the job starts
    assert named_run_dir(["-m", f"hydra.run.dir={other}", "model=rnn,lstm"]) is None  # each job its own folder
    assert named_run_dir([f"hydra.run.dir={other}" + "/${now:%H}"]) is None
    assert named_run_dir(["model=lstm"]) is None
