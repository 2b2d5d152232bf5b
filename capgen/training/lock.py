"""One writer per run folder: capgen-train holds an OS lock on `<run>/.lock` while it writes there.

Two capgen-train processes in one folder (two `resume=<run>` at once, or a new run given
`hydra.run.dir=` an existing run) would interleave their checkpoints, logs and records. The
lock is `flock` on `<run>/.lock`, which holds the holder's pid and host. The OS releases it
when the holder ends, however it ends (SIGKILL, a node's crash), so a `.lock` file left behind
never blocks a later run; the file itself stays.

capgen.cli.train takes it in two places, both in the launching process only (global rank 0:
the processes DDP starts write into its folder under its lock):
- before anything else, for a folder the command line names that exists already
  (`resume=<run>`, `hydra.run.dir=<folder>`): before resume_argv copies its .hydra/ aside and
  before Hydra rewrites .hydra/ and the log, so a refused command leaves it as it was;
- when each job starts, for the job's own folder (a new run's, a sweep job's): already held
  if it was named, otherwise Hydra has only just made it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # folder -> the open lock file, for each folder this process holds


class RunFolderInUse(RuntimeError):
    """Another process holds the run folder's lock; the message names the folder, the holder and the fix."""


def hold(folder: Path) -> bool:
    """Lock `folder` for this process until it exits or `release(folder)`; False (and nothing
    done) when this process holds it already. RunFolderInUse when another process holds it."""
    folder = folder.resolve()
    if folder in _held:
        return False
    if os.name != "posix":  # no flock: one writer per folder is then up to the user
        log.warning("%s: run folders are not locked on this system; start one capgen-train per folder", folder)
        return False
    import fcntl  # POSIX only

    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # an existing file is opened as it is
    except OSError as e:
        error = type(e)(f"could not create {path}: {e.strerror or e}. capgen-train writes the run into {folder}: "
                        "make it writable, or give another folder (hydra.run.dir=...).")
        error.errno = e.errno
        raise error from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").split()
        os.close(fd)
        pid, host = (holder + ["unknown", "unknown"])[:2]  # empty while the holder is writing its pid
        raise RunFolderInUse(
            f"{folder} is in use: capgen-train process {pid} on host {host} is writing into it (it holds {path}). "
            f"Wait for that run to end or stop it (kill {pid} on {host}), then run this command again; to train "
            "alongside it, give another folder (another resume=, or hydra.run.dir=<new folder>)."
        ) from None
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        # A file system without locks (some NFS or Lustre mounts): the run goes on, as before locks.
        log.warning("%s: this file system cannot lock files (%s), so nothing stops a second capgen-train from "
                    "writing into %s at the same time; start one per folder", path, e.strerror, folder)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    _held[folder] = fd
    return True


def release(folder: Path) -> None:
    """Give up this process's lock on `folder` (closing the file releases it)."""
    os.close(_held.pop(folder.resolve()))


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """`folder` locked for the block, unless this process held it already (then it stays held)."""
    taken = hold(folder)
    try:
        yield
    finally:
        if taken:
            release(folder)


def named_run_dir(args: list[str]) -> Path | None:
    """The existing folder a capgen-train command line (sys.argv[1:]) will write its run into,
    when it names one: resume=<run> (see capgen.training.resume), else hydra.run.dir=<folder>.
    None for a sweep (-m: each job has its own folder), a folder that does not exist yet, or
    one given with ${...} (Hydra resolves it later)."""
    if "-m" in args or "--multirun" in args:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException:
        return None  # Hydra reports the bad override itself
    given = {o.key_or_group: o.value() for o in parsed if not o.is_sweep_override()}
    value = given.get("resume") or given.get("hydra.run.dir")
    if not isinstance(value, str) or "${" in value:
        return None
    folder = Path(value).expanduser().absolute()
    return folder if folder.is_dir() else None
