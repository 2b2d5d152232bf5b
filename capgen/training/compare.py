"""The comparison table of training runs (capgen-compare): their overrides against their final
metrics, read from the run folders (capgen.training.run_dir).

A run is a folder holding .hydra/config.yaml (as capgen-train leaves it); its overrides come
from .hydra/overrides.yaml and its metrics from summary.json (the best epoch's val/* and the
test/* of that checkpoint). Overrides shared by every run are printed once above the table;
the ones that differ get a column each, and the run's folder comes last. Rows are sorted by
the first metric, best first; failed, unfinished and unreadable runs come last, with their
error. A run whose summary.json or overrides.yaml cannot be read is listed as unreadable, with
the reason, and the table goes on with the others.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .run_dir import UnreadableRecord, find_runs, read_summary, run_overrides

DEFAULT_METRICS = ("val/CIDEr", "val/BLEU-4", "test/CIDEr", "test/BLEU-4")


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]  # key (as written, e.g. +trainer.fast_dev_run) -> value
    status: str  # completed, failed, interrupted, unfinished or unreadable
    metrics: dict[str, float]
    error: str = ""


def load_run(path: Path) -> Run:
    overrides = {}
    try:
        for line in run_overrides(path):
            key, _, value = line.partition("=")
            overrides[key] = value
        summary = read_summary(path)
    except UnreadableRecord as e:  # listed as such, with what was read of it
        return Run(path, overrides, "unreadable", {}, str(e))
    if summary is None:
        return Run(path, overrides, "unfinished", {}, "no summary.json: still running, or stopped before the end")
    note = summary.get("error", "") or (f"{summary['signal']}; continue with {summary['resume']}" if summary["status"] == "interrupted" else "")
    return Run(path, overrides, summary["status"], summary.get("metrics", {}), note)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    common: list[str]  # overrides every run shares
    notes: list[str]  # one line per run that did not complete


def compare(roots: list[Path], metrics: list[str]) -> Table:
    runs = [load_run(p) for root in roots for p in find_runs(root)]
    if not runs:
        raise SystemExit(f"no capgen-train runs (folders with .hydra/config.yaml) under {', '.join(map(str, roots))}")
    keys = sorted({k for r in runs for k in r.overrides})
    # An override that is the same in every run says nothing about their differences.
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    common = [f"{k}={runs[0].overrides[k]}" for k in keys if k not in varying]

    def rank(run: Run) -> tuple:  # completed runs by the first metric, best first; then the rest
        value = run.metrics.get(metrics[0], math.nan)
        return (run.status != "completed", math.isnan(value), 0.0 if math.isnan(value) else -value)

    runs.sort(key=rank)
    base = Path(os.path.commonpath([r.path.absolute() for r in runs]))  # names are shown relative to it
    header = [*varying, "status", *metrics, "run"]  # the folder last: it repeats the overrides
    rows, notes = [], []
    for r in runs:
        name = str(r.path.absolute().relative_to(base)) if r.path.absolute() != base else r.path.name
        values = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metrics]
        rows.append([*(r.overrides.get(k, "-") for k in varying), r.status, *values, name])
        if r.status != "completed":
            notes.append(f"{name}: {r.status}: {r.error}")
    return Table(header, rows, common, notes)


def as_text(table: Table) -> str:
    widths = [max(len(row[i]) for row in [table.header, *table.rows]) for i in range(len(table.header))]
    lines = []
    if table.common:
        lines.append("all runs: " + " ".join(table.common))
    for row in [table.header, *table.rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    lines.extend(table.notes)
    return "\n".join(lines)


def as_markdown(table: Table) -> str:
    def cells(row: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    lines = []
    if table.common:
        lines.append("All runs: " + " ".join(f"`{o}`" for o in table.common) + "\n")
    lines.append(cells(table.header))
    lines.append("|" + "|".join("---" for _ in table.header) + "|")
    lines.extend(cells(row) for row in table.rows)
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"
