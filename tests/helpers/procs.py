"""Every process a test starts, started here: each in a process group of its own, so that
ending the group ends what it started too (DDP's second rank, a sweep's jobs, a server).

A group is ended when its process returns (whatever it left running dies with it), when
the test's wait times out or fails, and when pytest itself stops: at the end of the
session and on SIGTERM (tests/conftest.py), so that `timeout 60 pytest ...` leaves nothing
behind. The processes are killed with SIGKILL: they are the tests' own, nothing of theirs
needs saving once the test that asked for them is over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

_live: dict[int, subprocess.Popen] = {}  # pid (= process group id) -> process


def start(cmd: list[str], **popen) -> subprocess.Popen:
    """subprocess.Popen(cmd, **popen) in a new process group, ended by end() or end_all()."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    _live[proc.pid] = proc
    return proc


def end(proc: subprocess.Popen) -> None:
    """Kill proc's whole process group (what is already gone is fine) and reap proc."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is empty: everything in it has exited
        pass
    proc.wait()
    _live.pop(proc.pid, None)


def adopt(proc: subprocess.Popen) -> subprocess.Popen:
    """Have end_all() end a process started elsewhere with start_new_session=True."""
    _live[proc.pid] = proc
    return proc


def live() -> set[int]:
    return set(_live)


def end_all(keep: set[int] = frozenset()) -> None:
    """End every process group started here but those in `keep` (pids, as live() gives them)."""
    for pid, proc in list(_live.items()):
        if pid not in keep:
            end(proc)


def children() -> list[int]:
    """The pids of this process's children (pytest's xdist workers among them), from /proc;
    none where there is no /proc."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ...
        except OSError:  # the process ended while we looked
            continue
        if fields[1] == me:
            found.append(int(stat.parent.name))
    return found


def run(cmd: list[str], *, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, timeout=timeout) in a process group
    of its own, which is ended afterwards whatever happened (a leftover child included)."""
    proc = start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        end(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def capgen(command: str, *args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`capgen-<command> args...` as the console script runs it (`python -m capgen.cli.<command>`),
    with HYDRA_FULL_ERROR=1 and tests/ on PYTHONPATH (for helpers.crash_once and the like)."""
    return run([sys.executable, "-m", f"capgen.cli.{command}", *args], cwd=cwd, env=command_env(env), timeout=timeout)


def compare_without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`capgen-compare args...` in a process where torch cannot be imported: the command reads
    run folders and JSON only, so it starts in about a second where one that imported torch,
    Lightning and torchmetrics took 6.5 s (2-core EPYC Zen 3)."""
    code = "import sys; sys.modules['torch'] = None; from capgen.cli.compare import main; main()"
    return run([sys.executable, "-c", code, *args], cwd=cwd, env=command_env())


def command_env(extra: dict | None = None) -> dict:
    """The environment of a test's command: this one, HYDRA_FULL_ERROR=1 and tests/ importable."""
    tests = str(Path(__file__).parents[1])
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONPATH": path, **(extra or {})}


def why(done: subprocess.CompletedProcess, tail: int = 3000) -> str:
    """A failed command's stderr for an assertion message: every Python traceback in it whole,
    then its last `tail` characters. Processes that share one stderr (DDP's ranks, a sweep's
    jobs) interleave their output, and the rank that failed first may be far from the end."""
    lines, tracebacks, inside = done.stderr.splitlines(), [], False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            tracebacks.append([line])
            inside = True
        elif inside:
            tracebacks[-1].append(line)
            inside = line[:1].isspace()  # a traceback ends with its first unindented line, the exception
    found = "\n\n".join("\n".join(t) for t in tracebacks) or "(no traceback)"
    return f"every traceback in stderr:\n{found}\n\nthe last {tail} characters of stderr:\n{done.stderr[-tail:]}"
