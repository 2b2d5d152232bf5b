"""How a capgen command that fails ends: one paragraph on stderr (the error's own message,
see capgen.runs.records.one_paragraph) and exit status 1, with the traceback in
error.txt in the command's output folder, instead of Hydra's printed stack.

A Ctrl-C ends it with one line and exit status 130, the shell's code for SIGINT (capgen-train
records its own, capgen.runs.records), in a sweep (-m) too: the sweep stops there. Lightning's
own line for it ("Detected KeyboardInterrupt, ...") is left out. `HYDRA_FULL_ERROR=1` keeps
Hydra's full traceback, as Hydra documents, for both; in a sweep an error goes to Hydra, which
goes on with the other jobs and reports failures at the end.

A command refused before Hydra starts (a resume that does not fit the run, a setting its
constructor does not take, a run folder in use) ends the same way (`refused_at_start`); it
has no output folder yet, and the run folder it names must stay as it was, so its traceback
goes to a file in the system's temporary folder.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode

from ..atomic import write_atomically
from ..runs.records import RunFailed, RunStopped, one_paragraph


@contextmanager
def one_paragraph_on_failure(command: str, on_interrupt: str = "") -> Iterator[None]:
    """Ends a failure as the module docstring says, and a Ctrl-C with one line, `on_interrupt`
    (what the user may do next) added, and exit status 130, the shell's code for SIGINT.
    capgen-train records its own interruptions (capgen.runs.records)."""
    lightning_log = logging.getLogger(LIGHTNING_RANK_ZERO_LOG)
    lightning_log.addFilter(_without_interrupt_line)
    try:
        yield
    except RunStopped:  # capgen-train's run recorded its stop and said how to continue it
        raise
    except (KeyboardInterrupt, SystemExit) as e:
        # Lightning ends a Ctrl-C inside trainer.test with sys.exit(1), raised while handling it.
        ctrl_c = isinstance(e, KeyboardInterrupt) or isinstance(e.__context__, KeyboardInterrupt)
        if not ctrl_c or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        # In a sweep too: Hydra would let the exit through as status 1 with no word, or (a bare
        # KeyboardInterrupt) as a traceback; a Ctrl-C means the whole sweep stops.
        sweep = "; the sweep stops here, its later jobs not started" if HydraConfig.get().mode != RunMode.RUN else ""
        line = f"{command}: interrupted (Ctrl-C){sweep}.{' ' + on_interrupt if on_interrupt else ''}"
        print(line, file=sys.stderr, flush=True)
        to_log_files(line)
        raise SystemExit(128 + 2) from None
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode != RunMode.RUN:
            raise
        if isinstance(e, RunFailed):  # capgen-train has recorded it in the run folder already
            raise SystemExit(f"{command}: {e}") from None
        error_file = Path(HydraConfig.get().runtime.output_dir) / "error.txt"
        write_atomically(error_file, "".join(traceback.format_exception(e)).encode())
        paragraph = f"{command}: {one_paragraph(e)} (traceback in {error_file})"
        to_log_files(paragraph)
        raise SystemExit(paragraph) from None
    finally:
        lightning_log.removeFilter(_without_interrupt_line)


# The logger of Lightning's rank_zero_info, which says "Detected KeyboardInterrupt, attempting
# graceful shutdown ..." before it ends a Ctrl-C in fit or test with sys.exit(1).
LIGHTNING_RANK_ZERO_LOG = "lightning.pytorch.utilities.rank_zero"


def to_log_files(line: str) -> None:
    """`line`, the command's last word (printed on the console by itself), into the command's
    log file too (<output folder>/<command>.log, Hydra's job logging), so that the folder says
    how the command ended; no other handler, so the console does not show it twice."""
    record = logging.LogRecord(__name__, logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _without_interrupt_line(record: logging.LogRecord) -> bool:
    """False for Lightning's Ctrl-C line: the command says its own (one_paragraph_on_failure)."""
    return not str(record.msg).lstrip().startswith("Detected KeyboardInterrupt")


@contextmanager
def one_line_on_ctrl_c(command: str) -> Iterator[None]:
    """Around a command's whole main: a Ctrl-C outside its job (while its command line is
    checked, while Hydra composes its config or starts a sweep's next job) ends it as one in the
    job does, with one line and exit status 130, not a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{command}: interrupted (Ctrl-C).", file=sys.stderr, flush=True)
        raise SystemExit(128 + 2) from None


@contextmanager
def refused_at_start(command: str) -> Iterator[None]:
    """The checks a command makes on its command line before Hydra starts: an error ends it as
    `<command>: <Type>: <message> (traceback in <file>)`; an exit with a message (SystemExit)
    gets the `<command>: ` prefix."""
    try:
        yield
    except SystemExit as e:
        if isinstance(e.code, str) and not e.code.startswith(f"{command}: "):
            raise SystemExit(f"{command}: {e.code}") from None
        raise
    except Exception as e:
        # Also with HYDRA_FULL_ERROR=1: these are refusals, each one paragraph; the file has the traceback.
        raise SystemExit(f"{command}: {one_paragraph(e)} ({_keep_traceback(command, e)})") from None


@contextmanager
def hydra_refusals(command: str) -> Iterator[None]:
    """Hydra's main, as a command runs it: Hydra reports its own errors for a job (one line,
    HYDRA_FULL_ERROR=1 for the traceback), but composes the config for `--help` outside that
    report, so `--help model=lsmt` ended in a traceback. A Hydra error that reaches here is
    such a refusal: one paragraph, the traceback kept in a file."""
    try:
        yield
    except HydraException as e:
        raise SystemExit(f"{command}: {one_paragraph(e)} ({_keep_traceback(command, e)})") from None


def _keep_traceback(command: str, e: BaseException) -> str:
    """Where the traceback of a refusal was written: a new file in the temporary folder."""
    text = "".join(traceback.format_exception(e)).encode()
    try:
        fd, path = tempfile.mkstemp(prefix=f"{command}-", suffix="-error.txt")
        with os.fdopen(fd, "wb") as f:
            f.write(text)
    except OSError as write_error:
        return f"no traceback kept: {write_error}; HYDRA_FULL_ERROR=1 prints it"
    return f"traceback in {path}"
