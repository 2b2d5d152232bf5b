"""unit/ is fast: a test here never starts a Python or Java process (a capgen command, a
script, a JVM for the official tokenizer or METEOR, a DataLoader worker, a DDP rank) nor
fits a Trainer. Both are refused here, naming the test's place: e2e/. (Small system tools,
such as the ldconfig that ctypes asks for the C library, are let through.)"""

import multiprocessing.process
import os
import subprocess

import lightning as L
import pytest

SLOW_PROGRAMS = ("python", "java", "capgen-")


class NotInUnit(AssertionError):
    pass


def _refused(what: str) -> NotInUnit:
    return NotInUnit(f"a unit test {what}: move it to tests/e2e/ (unit/ never starts a process or trains)")


@pytest.fixture(autouse=True)
def _no_processes_or_training(monkeypatch):
    popen_init = subprocess.Popen.__init__

    def checked_popen(self, args, *rest, **kwargs):
        program = args if isinstance(args, str | bytes | os.PathLike) else args[0]
        if os.path.basename(os.fsdecode(program)).split()[0].startswith(SLOW_PROGRAMS):
            raise _refused(f"starts {program}")
        popen_init(self, args, *rest, **kwargs)

    def no_process(*args, **kwargs):
        raise _refused("starts a process")

    def no_fit(*args, **kwargs):
        raise _refused("fits a Trainer")

    monkeypatch.setattr(subprocess.Popen, "__init__", checked_popen)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", no_process)
    monkeypatch.setattr(L.Trainer, "fit", no_fit)
