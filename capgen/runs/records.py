"""What a training run leaves in its folder besides Hydra's `.hydra/` and Lightning's files,
and reading it back (capgen-compare, `capgen-eval run=...`; finding run folders and reading
their saved config: capgen.runs.folders).

    <run>/summary.json    {"status": "completed", "metrics": {...}, "best_checkpoint": "checkpoints/..."}
                          or {"status": "failed", "error": "<type>: <message>", "traceback": "error.txt"}
                          or {"status": "interrupted", "signal": "SIGTERM", "resume": "capgen-train resume=<run>"}
                          a failed or interrupted run that measured something also has the "metrics" (train/* and
                          the best epoch's val/*) and the "best_checkpoint" it had when it stopped;
                          after a resume that failed before it changed a checkpoint, the run's own summary
                          (its status that of the run, not of the resume) with "resume_failed": {"error",
                          "traceback": "error.resume-<time>.txt", "command": the resume as typed}
    <run>/error.txt       the full traceback of a failed run (error.rank<N>.txt from DDP rank N > 0)
    <run>/error.resume-<time>.txt   the traceback of a resume that failed and left the run as it was
    <run>/test_captions.jsonl  the test of the best checkpoint, per image (capgen.runs.tested)

A run folder without summary.json is still running, or was stopped before it could write one.
These files are written atomically (capgen.atomic): a reader finds all of one or none.
A record that cannot be read (written by hand, or by a tool that was cut off) is an
UnreadableRecord naming the file: capgen-compare lists that run as unreadable and goes on.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from ..atomic import write_atomically

log = logging.getLogger(__name__)

SUMMARY = "summary.json"


# The runs this process resumes (capgen.config.resume_argv, before Hydra starts): run folder ->
# where its records were kept before the resume, its checkpoints' sizes and times then, and the
# resume's command line as typed.
_before_resume: dict[Path, tuple[Path, dict[str, tuple[int, int]], str]] = {}


# What the run this process trains had measured when it stopped (measured_on_stop): run folder ->
# (its metrics, its best checkpoint), for the failed or interrupted summary.json.
_measured_on_stop: dict[Path, tuple[dict[str, float], str | None]] = {}


class RunFailed(RuntimeError):
    """A run raised; its traceback is in the file named in the message."""


class RunStopped(SystemExit):
    """A run stopped on a signal (SIGTERM, SIGUSR1, Ctrl-C) and recorded it: its summary.json
    says how to continue it. The exit status is the shell's for "ended by signal n", 128 + n."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


class UnreadableRecord(ValueError):
    """A run's record (summary.json, .hydra/overrides.yaml) cannot be read; the message names it."""


def _write_json(path: Path, value: dict) -> None:
    write_atomically(path, (json.dumps(value, indent=2) + "\n").encode())


def relative_to_run(run: Path, checkpoint: str | None) -> str | None:
    """A checkpoint's path relative to the run when inside it, so the folder can be moved (e.g.
    copied off a cluster)."""
    best = Path(checkpoint).absolute() if checkpoint else None
    if best is not None and best.is_relative_to(run.absolute()):
        best = best.relative_to(run.absolute())
    return str(best) if best else None


def write_summary(run: Path, metrics: dict[str, float], best_checkpoint: str | None,
                  test_decode: dict | None = None, thread_changes: int = 0) -> None:
    """The completed run's final train/val/test metrics and its best checkpoint (relative to the
    run when inside it, so the folder can be moved, e.g. copied off a cluster); when it was
    tested, the decode settings its test/* metrics are for; and how often torch's thread count
    followed the machine's load (capgen.lightning.threads), when it did: its scores then equal
    a rerun's only to float rounding."""
    final = {k: v for k, v in metrics.items() if k.startswith(("train/", "val/", "test/"))}
    summary = {"status": "completed", "metrics": final, "best_checkpoint": relative_to_run(run, best_checkpoint)}
    if test_decode is not None:
        summary["test_decode"] = test_decode
    if thread_changes:
        summary["thread_count_changes"] = thread_changes
    _write_json(run / SUMMARY, summary)


def earlier_train_metrics(run: Path) -> dict[str, float]:
    """The train/* metrics the run's summary.json records (none when it has none, or cannot be
    read). A resume that trains nothing (of a completed run, or from a fallback checkpoint as
    new as its last) measured none itself: its summary carries these forward, the last epoch's
    as the process that trained it measured them."""
    try:
        summary = read_summary(run)
    except UnreadableRecord:
        return {}
    return {k: v for k, v in (summary or {}).get("metrics", {}).items() if k.startswith("train/")}


@contextmanager
def measured_on_stop(run: Path, measured: Callable[[], tuple[dict[str, float], str | None]]) -> Iterator[None]:
    """Around a run's training: when it raises (it fails, or stops on a signal or Ctrl-C),
    `measured()`, its metrics so far and its best checkpoint, is kept for the failed or
    interrupted summary.json that run_recording_failure writes; so the run's best checkpoint
    and best val scores are on record (capgen-compare, `capgen-eval run=`, `capgen-demo run=`).
    Plain numbers and a path are kept, not the trainer: a failed run's objects are freed."""
    try:
        yield
    except BaseException:
        try:
            _measured_on_stop[run.absolute()] = measured()
        except Exception as e:  # e.g. a device in error: the summary is written without them
            log.warning("the metrics measured so far could not be read for %s (%s)", run / SUMMARY, one_paragraph(e))
        raise


def _so_far(run: Path) -> dict:
    """What a run that stopped had measured (measured_on_stop), as summary.json entries: its
    train/* and best val/* metrics, and its best checkpoint where one is on disk; {} when none."""
    metrics, best = _measured_on_stop.pop(run.absolute(), ({}, None))
    entries: dict = {}
    kept = {k: float(v) for k, v in metrics.items() if k.startswith(("train/", "val/"))}  # a test cut off says nothing
    if kept:
        entries["metrics"] = kept
    if best and Path(best).is_file():
        entries["best_checkpoint"] = relative_to_run(run, best)
    return entries


def run_recording_failure(fn: Callable[[DictConfig], dict], cfg: DictConfig) -> dict:
    """fn(cfg), and if it raises: the traceback to the log and to <run>/error.txt, a failed
    summary.json, then RunFailed naming the file.

    Hydra's launchers catch a job's exception and go on with the sweep's other jobs, but keep
    the exception until the sweep ends and then only report the first one; so each job keeps
    its own traceback, and capgen-compare can list it as failed.

    A resume that fails before it changes a checkpoint leaves the run as it was (its records put
    back: the run's result is still the one they describe), and its traceback beside them in a
    file of its own, error.resume-<time>.txt, with a "resume_failed" entry in summary.json: the
    run's error.txt and status stay those of the run itself.
    """
    run = Path(cfg.paths.output_dir)
    before = _before_resume.pop(run.absolute(), None)
    _measured_on_stop.pop(run.absolute(), None)  # an earlier job's in this folder (a train(cfg) of a notebook, say)
    try:
        return fn(cfg)
    except SystemExit as e:
        interrupted = _interruption(e)
        if interrupted is None:
            _measured_on_stop.pop(run.absolute(), None)
            raise
        _record_interruption(run, *interrupted, _so_far(run))
        raise RunStopped(interrupted[1]) from None
    except KeyboardInterrupt:  # a Ctrl-C outside Lightning's fit and test: while the data loads, say
        _record_interruption(run, "SIGINT", 2, False, _so_far(run))
        raise RunStopped(2) from None
    except Exception as e:
        # Imported here: capgen-compare reads run folders and should not wait for Lightning.
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        rank = rank_zero_only.rank
        error_file = run / ("error.txt" if rank == 0 else f"error.rank{rank}.txt")
        text = "".join(traceback.format_exception(e))
        message = one_paragraph(e)
        so_far = _so_far(run)
        what = "run failed"
        try:
            keep, checkpoints, command = before or (None, None, "")
            if keep is not None and _restore_before_resume(run, keep, checkpoints):
                # The run is as it was: its error.txt (if it failed before) and status stay its own.
                error_file = run / f"error.{keep.name.removeprefix('before-')}.txt"
                write_atomically(error_file, text.encode())
                _note_failed_resume(run, message, error_file.name, command)
                what = "resume failed"
                where = (f"traceback in {error_file}; the resume failed before it changed the run's checkpoints, so "
                         f"the run folder was left as it was (its summary.json and .hydra/ settings put back): with the "
                         f"cause fixed, run the resume again: {command}")
            else:
                write_atomically(error_file, text.encode())
                where = f"traceback in {error_file}"
                if rank == 0:
                    _write_json(run / SUMMARY, {"status": "failed", "error": message, "traceback": error_file.name, **so_far})
        except OSError as write_error:
            # A full disk is often why the run failed: its records cannot be written then, but the
            # run's own error stays the one raised, with the write's error next to it.
            where = f"its records could not be written: {write_error}"
        # The text, not exc_info: a log handler that keeps records would keep the exception.
        if where.startswith("traceback in"):
            log.error("%s: %s (%s)", what, message, where)  # one paragraph; error.txt has the traceback
        else:
            log.error("%s; %s\n%s", what, where, text.rstrip())  # the traceback's only copy
    # Raised outside the except block so the original exception, and through its traceback the
    # failed run's frames (its model, and on a GPU its memory), are freed before Hydra starts
    # the sweep's next job: Hydra holds on to the exception it is given until the sweep ends.
    raise RunFailed(f"{message} (run {run}; {where})")


def keep_before_resume(run: Path, command: str = "") -> None:
    """Copy the run's .hydra/*.yaml and summary.json to .hydra/before-resume-<time>/ before a
    resume: Hydra rewrites the first when the resumed job starts. If the resume then fails
    before it changes the run's checkpoints, run_recording_failure puts them back, since the
    run's result is still the one they describe (a failed summary would hide it from
    capgen-eval run=, and overrides.yaml would keep the setting that failed for the next resume).
    `command`: the resume's command line as typed, for the note of its failure."""
    keep = run / ".hydra" / f"before-resume-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    keep.mkdir(parents=True, exist_ok=True)
    for f in [*(run / ".hydra").glob("*.yaml"), run / SUMMARY]:
        if f.is_file():
            shutil.copy2(f, keep / f.name)
    _before_resume[run.absolute()] = (keep, _checkpoints(run),
                                      command or f"capgen-train resume={shlex.quote(str(run.absolute()))}")


def _note_failed_resume(run: Path, message: str, traceback_file: str, command: str) -> None:
    """The run's own summary.json, put back, with the resume that failed noted in it (see
    run_recording_failure); none is written for a run that had none (it stopped before writing one)."""
    try:
        summary = read_summary(run)
    except UnreadableRecord:
        return
    if summary is not None:
        _write_json(run / SUMMARY, {**summary, "resume_failed": {"error": message, "traceback": traceback_file,
                                                                  "command": command}})


def set_aside_old_errors(run: Path) -> None:
    """A resumed run that completed: the error.txt (and error.rank<N>.txt) of the failure it
    resumed from, and the error.resume-<time>.txt of earlier resumes that failed, are moved
    beside the records the resume kept (.hydra/before-resume-<time>/, the newest), so that the
    folder of a completed run holds no traceback of a failure it got over; nothing is deleted."""
    old = [f for f in run.glob("error*.txt") if f.is_file()]
    kept = sorted((run / ".hydra").glob("before-resume-*"))  # the newest last: named by the time
    if not old or not kept:
        return
    for f in old:
        os.replace(f, kept[-1] / f.name)
    log.info("the traceback of the failure this resume got over (%s) moved to %s", ", ".join(f.name for f in old), kept[-1])


def _checkpoints(run: Path) -> dict[str, tuple[int, int]]:
    """Each checkpoint file of the run: (size, modification time); a write changes them (a
    checkpoint is written to a new file and renamed over the old, capgen.atomic)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in (run / "checkpoints").glob("*.ckpt")}


def _restore_before_resume(run: Path, keep: Path, checkpoints: dict[str, tuple[int, int]]) -> bool:
    """Put back what keep_before_resume kept, unless the resume changed the run's checkpoints;
    whether it did."""
    if not keep.is_dir() or _checkpoints(run) != checkpoints:
        return False
    for f in keep.iterdir():
        os.replace(f, run / f.name if f.name == SUMMARY else run / ".hydra" / f.name)
    keep.rmdir()
    return True


def one_paragraph(e: BaseException) -> str:
    """`Type: message` on one line. An error raised in a DataLoader worker reaches the main
    process as torch re-raises it: "Caught ValueError in DataLoader worker process 0." then
    the worker's whole traceback in the message; the paragraph is the worker's own error
    line(s), and which worker (the traceback is kept in error.txt)."""
    text = str(e)
    caught, marker, traceback_text = text.partition("\nOriginal Traceback (most recent call last):\n")
    if marker:
        # The error's own text follows the last frame ('  File "..."' and its indented code lines).
        lines = traceback_text.rstrip().splitlines()
        start = max((i + 1 for i, line in enumerate(lines) if line.startswith('  File "')), default=0)
        while start < len(lines) - 1 and lines[start].startswith("    "):
            start += 1
        own = " ".join(line.strip() for line in lines[start:])
        where = caught.removeprefix("Caught ").split(" ", 1)[-1].rstrip(".")
        return f"{own} ({where})"
    return f"{type(e).__name__}: {' '.join(text.split())}"


def _interruption(e: SystemExit) -> tuple[str, int, bool] | None:
    """(signal name, number, whether last.ckpt was written at the stop) when `e` ended the run on a
    signal: capgen's RunInterrupted, Lightning's SIGTERMException (a SIGTERM outside training
    steps) or its exit after a Ctrl-C; None for any other exit."""
    import signal

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    signum = getattr(e, "signum", None)
    if signum is not None:
        return signal.Signals(signum).name, signum, bool(getattr(e, "saved", False))
    if isinstance(e, SIGTERMException):
        return "SIGTERM", int(signal.SIGTERM), False
    if isinstance(e.__context__, KeyboardInterrupt):  # Lightning ends a Ctrl-C in fit or test with sys.exit(1)
        return "SIGINT", int(signal.SIGINT), False
    return None


def _record_interruption(run: Path, name: str, signum: int, saved: bool, so_far: dict | None = None) -> None:
    """An interrupted summary.json: the signal, last.ckpt and the command that resumes from it,
    and `so_far` (_so_far: the metrics and best checkpoint of the epochs it finished)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0 or not run.is_dir():
        return
    if not (run / "checkpoints" / "last.ckpt").is_file():  # nothing to resume: said so, not a resume that fails
        _write_json(run / SUMMARY, {"status": "interrupted", "signal": name, "checkpoint": None, **(so_far or {})})
        log.warning("%s: the run stopped before its first checkpoint was written; run it again to train it", name)
        return
    where = "at the end of the step it was in" if saved else "earlier (the stop came outside a training step)"
    # Quoted for the shell: a sweep job's folder holds its overrides ({...}, commas, spaces).
    resume = f"capgen-train resume={shlex.quote(str(run))}"
    summary = {"status": "interrupted", "signal": name, "checkpoint": "checkpoints/last.ckpt", "resume": resume,
               **(so_far or {})}
    _write_json(run / SUMMARY, summary)
    log.warning("%s: the run stopped; its last.ckpt was written %s. Continue it with: %s", name, where, resume)


def read_summary(run: Path) -> dict | None:
    """The run's summary.json, or None when it has none; UnreadableRecord when it cannot be read
    or is not a summary as write_summary and run_recording_failure write them."""
    path = run / SUMMARY
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnreadableRecord(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(summary, dict) or summary.get("status") not in ("completed", "failed", "interrupted"):
        raise UnreadableRecord(f"{path}: not a capgen run summary (it needs status completed, failed or interrupted)")
    metrics = summary.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise UnreadableRecord(f"{path}: its metrics are not a mapping of names to numbers")
    return summary
