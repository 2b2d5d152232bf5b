"""What capgen-train says when it ends, however it ends: where the run is, how it went, and
the commands to run next (capgen.commands.train.run logs these lines; train.log keeps them)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from ...config.argv import PATH_KEYS
from ...runs.folders import start_again
from ...runs.records import SUMMARY, UnreadableRecord, read_summary


def what_next(run: Path, monitor: str = "val/CIDEr", fast_dev_run: bool = False,
              without_images: Sequence[str] = ()) -> list[str]:
    """A few lines for the end of a capgen-train run in `run`, from what it left there
    (`fast_dev_run`: the run's trainer.fast_dev_run was set; `without_images`: the splits of its
    data that have no images, which no capgen-eval line names)."""
    run = run.absolute()
    folder = shlex.quote(str(run))
    try:
        summary = read_summary(run)
    except UnreadableRecord as e:
        return [f"run folder: {run}", f"its record cannot be read: {e}"]
    if summary is None:
        return [f"run folder: {run}", f"the run ended before writing {SUMMARY}; its log is {run / 'train.log'}"]
    failed_resume = summary.get("resume_failed")
    if isinstance(failed_resume, dict):  # this resume failed and left the run as it was: not its outcome
        traceback_file = run / str(failed_resume.get("traceback", ""))
        return [f"run folder: {run} (this resume failed, traceback in {traceback_file}; the run is as it was before "
                f"it: {summary['status']})",
                f"next: fix the cause, then run the resume again: {failed_resume.get('command') or f'capgen-train resume={folder}'}"]
    lines = [f"run folder: {run} ({summary['status']})"]
    if summary["status"] in ("failed", "interrupted"):
        lines += _best_so_far(run, summary, monitor, _scored_on(without_images))
    if summary["status"] == "failed":  # the error itself is the command's last line
        lines[0] = f"run folder: {run} (failed; traceback in {run / summary.get('traceback', 'error.txt')})"
        if (run / "checkpoints" / "last.ckpt").is_file():  # it resumes as an interrupted run does, its epochs kept
            lines.append(f"next: fix the cause, then continue it: capgen-train resume={folder} (or start it again: {_again(run)})")
        else:
            lines.append(f"next: fix the cause and run again: {_again(run, in_its_folder=True)}")
        return lines
    if summary["status"] == "interrupted":
        if "checkpoint" in summary and summary["checkpoint"] is None:  # stopped before its first one
            lines.append(f"next: it stopped before its first checkpoint; run it again: {_again(run, in_its_folder=True)}")
        else:
            # The folder as it is now, quoted (a summary written before the quoting has it bare).
            lines.append(f"next: continue it where it stopped: capgen-train resume={folder}")
        return lines
    best = summary.get("best_checkpoint")
    metrics = summary.get("metrics", {})
    # Only where the run logged to TensorBoard (logger=[] or [csv] write no tb/: conf/logger/tensorboard.yaml).
    watch = ([f"  tensorboard --logdir {folder}    # then open its #custom_scalars page: scores and losses first"]
             if (run / "tb").is_dir() else [])
    if best:
        score = f" ({monitor} {metrics[monitor]:.3f})" if monitor in metrics else ""
        test = f", test/CIDEr {metrics['test/CIDEr']:.3f}" if "test/CIDEr" in metrics else ""
        lines.append(f"best checkpoint: {best}{score}{test}")
        checkpoint, run_or_ckpt = shlex.quote(str(run / best)), f"run={folder}"
    elif (run / "checkpoints" / "last.ckpt").is_file():
        lines.append("best checkpoint: none (no validation ran); the last: checkpoints/last.ckpt")
        checkpoint = shlex.quote(str(run / "checkpoints" / "last.ckpt"))
        run_or_ckpt = f"ckpt_path={checkpoint}"
    else:  # e.g. trainer.fast_dev_run, or trainer.enable_checkpointing=false
        why = " (trainer.fast_dev_run writes none)" if fast_dev_run else ""
        return [*lines, f"no checkpoint was written{why}", *(["next:", *watch] if watch else [])]
    split = _scored_on(without_images)
    evaluate = {"test": [f"  capgen-eval {run_or_ckpt}    # the checkpoint on the test split"],
                "val": [f"  capgen-eval {run_or_ckpt} split=val    # the checkpoint on the val split (the data has no "
                        "test images)"], None: []}[split]
    lines += [
        "next:",
        *watch,
        *evaluate,
        f"  capgen-caption ckpt_path={checkpoint} images=<a folder of your photos>",
        f"  capgen-demo {run_or_ckpt}    # a local web page (pip install -e \".[demo]\")",
    ]
    return lines


def _scored_on(without_images: Sequence[str]) -> str | None:
    """The split capgen-eval scores a checkpoint of this data on: test, else val, else none."""
    return next((s for s in ("test", "val") if s not in without_images), None)


def _best_so_far(run: Path, summary: dict, monitor: str, split: str | None = "test") -> list[str]:
    """The best checkpoint a run that did not complete left, as a line: the one its summary
    records (with its score, and the capgen-eval that scores it on `split`, the test split by
    default), else the newest best-epoch checkpoint (its name holds its score:
    conf/callbacks/default.yaml); none when it left none."""
    best, metrics = summary.get("best_checkpoint"), summary.get("metrics", {})
    if best:
        score = f" ({monitor} {metrics[monitor]:.3f})" if monitor in metrics else ""
        on = {"test": "", "val": " split=val"}
        scores = f"; capgen-eval run={shlex.quote(str(run))}{on[split]} scores it" if split else ""
        return [f"best checkpoint so far: {best}{score}{scores}"]
    found = sorted((run / "checkpoints").glob("*-best*.ckpt"), key=lambda p: p.stat().st_mtime)
    return [f"best checkpoint so far: {found[-1].relative_to(run)}"] if found else []


def _again(run: Path, in_its_folder: bool = False) -> str:
    """The command line that starts the run again (capgen.runs.folders.start_again)."""
    return start_again(run, PATH_KEYS["train"], in_its_folder)
