"""All-or-nothing file writes, for checkpoints (capgen.lightning.checkpoint_io) and a run's records
(summary.json, error.txt, capgen-eval's metrics.json, ...): a reader, or a process that resumes,
finds either the previous file or the whole new one, never a half-written one.

The bytes go to `<name>.tmp` in the same folder (a rename is only atomic within one file
system), are flushed to disk (fsync), and only then renamed over the final name (`os.replace`
is atomic on POSIX and Windows); the folder is fsynced so the rename itself survives a power
cut. A write that fails (a full disk, a read-only folder) removes its `.tmp` and raises an
OSError naming the file; a `.tmp` left by a killed process is overwritten by the next write.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` so that `path` holds either its old content or all of `data`."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # on a full disk too: removing a file needs no space
        if not isinstance(e, OSError):
            raise  # an interrupt or a bug, not the disk's answer: as it is
        # The same kind (PermissionError for a read-only folder, ...) and errno, a message that says what to do.
        error = type(e)(
            f"could not write {path}: {e.strerror or e}. Free space on its disk, or make {path.parent} writable "
            "or write to another folder (hydra.run.dir=...), then run the command again; "
            f"{path.name} was left as it was before."
        )
        error.errno = e.errno
        raise error from None
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); Windows cannot open folders and needs none."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
