"""One writer per run folder: capgen-train holds an OS lock on the run folder while it writes there.

Two capgen-train processes in one folder (two `resume=<run>` at once, or a new run given
`hydra.run.dir=` an existing run) would interleave their checkpoints, logs and records. The
lock is `flock` on the folder itself, so taking it writes nothing: a command refused after
taking it (a resume that does not fit the run) leaves the folder byte for byte as it was.
Once a command is accepted, `record_holder` writes its pid and host into `<run>/.lock`, which
is what a refused second process names; the file is information, not the lock. The OS
releases the lock when the holder ends, however it ends (SIGKILL, a node's crash), so a
`.lock` file left behind never blocks a later run.

capgen-train takes it in two places, both in the launching process only (global rank 0:
the processes DDP starts write into its folder under its lock):
- before anything else (capgen.config.command_line), for a folder the command line names
  (`resume=<run>`, `hydra.run.dir=<folder>`; a new one is made first, with an exclusive mkdir):
  before resume_argv copies its .hydra/ aside and before Hydra rewrites .hydra/ and the log,
  so a refused command leaves it as it was;
- when each job starts (capgen.commands.train.run), for the job's own folder (a new run's, a
  sweep job's): already held if it was named, otherwise Hydra has only just made it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # folder -> the open lock file, for each folder this process holds


class RunFolderInUse(RuntimeError):
    """Another process holds the run folder's lock; the message names the folder, the holder and the fix."""


def hold(folder: Path, record: bool = True) -> bool:
    """Lock `folder` for this process until it exits or `release(folder)`, and (with `record`)
    name this process in its .lock file; False (and nothing done) when this process holds it
    already. RunFolderInUse when another process holds it."""
    folder = folder.resolve()
    if folder in _held:
        return False
    if os.name != "posix":  # no flock: one writer per folder is then up to the user
        log.warning("%s: run folders are not locked on this system; start one capgen-train per folder", folder)
        return False
    import fcntl  # POSIX only

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        why = "it is a file, not a folder" if folder.is_file() else e.strerror or str(e)
        error = type(e)(f"could not open {folder}: {why}. capgen-train writes the run into it: make it "
                        "a writable folder, or give another folder (hydra.run.dir=...).")
        error.errno = e.errno
        raise error from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        path = folder / LOCK_FILE
        holder = path.read_text(errors="replace").split() if path.is_file() else []
        pid, host = (holder + ["unknown", "unknown"])[:2]  # unknown until the holder has written it
        raise RunFolderInUse(
            f"{folder} is in use: capgen-train process {pid} on host {host} is writing into it (it holds the folder's "
            f"lock; {path} names it). Wait for that run to end or stop it (kill {pid} on {host}), then run this "
            "command again; to train alongside it, give another folder (another resume=, or hydra.run.dir=<new folder>)."
        ) from None
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        # A file system without locks (some NFS or Lustre mounts): the run goes on, as before locks.
        log.warning("%s: this file system cannot lock folders (%s), so nothing stops a second capgen-train from "
                    "writing into it at the same time; start one per folder", folder, e.strerror)
        return False
    _held[folder] = fd
    if record:
        record_holder(folder)
    return True


def record_holder(folder: Path) -> None:
    """Write this process's pid and host into `<folder>/.lock`, for a refused second process to name."""
    (folder.resolve() / LOCK_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")


def release(folder: Path) -> None:
    """Give up this process's lock on `folder` (closing the file releases it)."""
    os.close(_held.pop(folder.resolve()))


def release_all() -> None:
    """Give up every lock this process holds: where a command's main() ends without its process
    ending (a notebook, a test), so that the folders are not left locked until the process exits."""
    for folder in list(_held):
        release(folder)


def remove_own_lock_file(folder: Path) -> bool:
    """Give up this process's lock on `folder`, if it holds it, and remove `<folder>/.lock` when
    the file names this process (record_holder wrote it): for a folder this process made and
    leaves with nothing else in it. Whether no .lock is left (False: another process's, kept)."""
    if folder.resolve() in _held:
        release(folder)
    path = folder / LOCK_FILE
    try:
        if path.read_text(errors="replace").split()[:2] != [str(os.getpid()), socket.gethostname()]:
            return False
        path.unlink()
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return False
    return True


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """`folder` locked for the block, unless this process held it already (then it stays held)."""
    taken = hold(folder)
    try:
        yield
    finally:
        if taken:
            release(folder)
