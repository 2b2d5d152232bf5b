"""What capgen-train says when it ends, however it ends: where the run is, how it went, and
the commands to run next (capgen.cli.train logs these lines; train.log keeps them)."""

from __future__ import annotations

import shlex
from pathlib import Path

from .run_dir import SUMMARY, UnreadableRecord, read_summary, run_overrides


def what_next(run: Path, monitor: str = "val/CIDEr") -> list[str]:
    """A few lines for the end of a capgen-train run in `run`, from what it left there."""
    run = run.absolute()
    folder = shlex.quote(str(run))
    try:
        summary = read_summary(run)
    except UnreadableRecord as e:
        return [f"run folder: {run}", f"its record cannot be read: {e}"]
    if summary is None:
        return [f"run folder: {run}", f"the run ended before writing {SUMMARY}; its log is {run / 'train.log'}"]
    lines = [f"run folder: {run} ({summary['status']})"]
    if summary["status"] == "failed":
        given = " ".join(shlex.quote(o) for o in _overrides(run))
        lines += [f"error: {summary.get('error', '?')} (traceback in {run / summary.get('traceback', 'error.txt')})",
                  f"next: fix the cause and run again: capgen-train {given}".rstrip()]
        return lines
    if summary["status"] == "interrupted":
        lines.append(f"next: continue it where it stopped: {summary.get('resume') or f'capgen-train resume={folder}'}")
        return lines
    best = summary.get("best_checkpoint")
    metrics = summary.get("metrics", {})
    if best:
        score = f" ({monitor} {metrics[monitor]:.3f})" if monitor in metrics else ""
        test = f", test/CIDEr {metrics['test/CIDEr']:.3f}" if "test/CIDEr" in metrics else ""
        lines.append(f"best checkpoint: {best}{score}{test}")
    else:
        lines.append("best checkpoint: none (no validation ran)")
    checkpoint = shlex.quote(str(run / best)) if best else shlex.quote(str(run / "checkpoints" / "last.ckpt"))
    lines += [
        "next:",
        f"  tensorboard --logdir {folder}    # curves, sample captions, attention",
        f"  capgen-eval run={folder}    # the best checkpoint on the test split",
        f"  capgen-caption ckpt_path={checkpoint} images=<a folder of your photos>",
        f"  capgen-demo run={folder}    # a local web page (pip install -e \".[demo]\")",
    ]
    return lines


def _overrides(run: Path) -> list[str]:
    try:
        return run_overrides(run)
    except UnreadableRecord:
        return []
