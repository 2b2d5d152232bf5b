"""One writer per run folder, with real capgen-train processes: while one trains in a folder, a
second capgen-train on that folder (resume= it, or a new run given hydra.run.dir= it) stops at
once with one paragraph naming the folder and the holder, and leaves the folder byte for byte
as it was; once the holder is SIGKILLed, the folder can be resumed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import procs
from helpers.runs import snapshot
from helpers.workflow import SMALL, capgen, summary


def holds_lock(run: Path, pid: int) -> bool:
    lock = run / ".lock"
    return lock.is_file() and lock.read_text().split()[:1] == [str(pid)]


@pytest.mark.slow
def test_a_second_capgen_train_on_a_run_in_progress_is_refused_and_a_killed_holder_frees_the_folder(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    with open(tmp_path / "holder.log", "w") as log:  # a file, not a pipe that could fill and stall it
        holder = procs.start([sys.executable, "-m", "capgen.cli.train", *SMALL, "model=rnn", "test=false",
                              "trainer.max_epochs=1000", f"hydra.run.dir={run}"],
                             cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 300
        while not (run / "checkpoints" / "last.ckpt").is_file():
            assert holder.poll() is None, (tmp_path / "holder.log").read_text()[-3000:]
            assert time.monotonic() < end, "timed out waiting for the first checkpoint"
            time.sleep(0.05)
        # Stopped, the holder keeps its lock and its folder holds still while the others try.
        os.kill(holder.pid, signal.SIGSTOP)
        before = snapshot(run)
        # One epoch each: without the lock they would finish quickly, having written into the folder.
        for args in ([f"resume={run}"], [*SMALL, "model=lstm", f"hydra.run.dir={run}"]):
            refused = capgen("train", *args, "trainer.max_epochs=1", cwd=tmp_path, timeout=300)
            assert refused.returncode == 1
            message = refused.stderr.strip().splitlines()[-1]
            assert message.startswith(f"capgen-train: RunFolderInUse: {run} is in use: capgen-train process {holder.pid} on host "), \
                refused.stderr[-3000:]
            assert f"kill {holder.pid}" in message and "run this command again" in message
            assert "Traceback" not in refused.stderr
            assert snapshot(run) == before, args
        assert holds_lock(run, holder.pid)
    finally:
        holder.kill()  # SIGKILL, stopped or not: the OS releases its lock
        holder.wait()

    epoch = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    resumed = capgen("train", f"resume={run}", f"trainer.max_epochs={epoch + 2}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert summary(run)["status"] == "completed"
    assert not holds_lock(run, holder.pid)  # the resumed process wrote its own pid


def test_a_run_folder_that_is_a_file_is_named_as_such(tmp_path):
    from capgen.runs.lock import hold

    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(FileExistsError) as err:
        hold(target)
    assert str(err.value).startswith(f"could not open {target}: it is a file, not a folder.")
    assert target.read_text() == "mine"


def test_a_new_folder_named_by_two_commands_at_once_is_made_and_locked_by_one_before_hydra_writes(tmp_path, monkeypatch):
    """Two capgen-train started at once with the same new hydra.run.dir: the first command line
    through makes the folder with an exclusive mkdir and locks it (this test process plays that
    one), so the second is refused before Hydra writes its .hydra/ over the first's."""
    from capgen.config.command_line import command_line
    from capgen.runs.lock import release

    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", "0")  # restored afterwards: command_line("train") sets it
    run = tmp_path / "new" / "run"
    command_line("train", [*SMALL, f"hydra.run.dir={run}"])
    try:
        assert run.is_dir() and holds_lock(run, os.getpid())
        second = capgen("train", *SMALL, f"hydra.run.dir={run}", "trainer.max_epochs=1", cwd=tmp_path, timeout=300)
        assert second.returncode == 1 and f"capgen-train: RunFolderInUse: {run} is in use: capgen-train process {os.getpid()}" \
            in second.stderr, second.stderr[-3000:]
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing of the second's
    finally:
        release(run)


def test_a_refused_command_removes_the_new_folder_it_made(tmp_path, monkeypatch):
    from capgen.config.checks import UnknownSetting
    from capgen.config.command_line import command_line

    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", "0")
    with pytest.raises(UnknownSetting, match="Did you mean seed"):
        command_line("train", [f"hydra.run.dir={tmp_path / 'a' / 'b'}", "+seeed=1"])
    assert list(tmp_path.iterdir()) == []
    command_line("train", [f"hydra.run.dir={tmp_path / 'a' / 'b'}"])  # the same folder, accepted: made and held
    from capgen.runs.lock import release

    assert (tmp_path / "a" / "b").is_dir()
    release(tmp_path / "a" / "b")
