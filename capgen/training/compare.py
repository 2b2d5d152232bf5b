"""The comparison table of training runs (capgen-compare): their overrides against their final
metrics, read from the run folders (capgen.training.run_dir); and the paired comparison of two
runs, or two seed groups, image by image on their test set.

A run is a folder holding .hydra/config.yaml (as capgen-train leaves it); its overrides come
from .hydra/overrides.yaml and its metrics from summary.json (the best epoch's val/* and the
test/* of that checkpoint). Overrides shared by every run are printed once above the table;
the ones that differ get a column each, and the run's folder comes last. Rows are sorted by
the first metric, best first; failed, unfinished and unreadable runs come last, with their
error. A run whose summary.json or overrides.yaml cannot be read is listed as unreadable, with
the reason, and the table goes on with the others.

Seed groups: completed runs whose overrides are the same apart from `seed` (e.g. the jobs of
`-m seed=1,2,3 model=rnn,lstm`) share one row, each metric as "mean +- sd (n)" over them
(sd the sample standard deviation, n-1 in its denominator; n the runs that have the metric),
the seeds listed in the seed column and every folder in the run column. Other runs keep a
row each. `group_seeds=False` gives every run its own row.

Paired comparison (`capgen-compare --paired A B`): each side is one run folder, a folder of
runs, or a glob pattern matching such folders (quoted, so the shell leaves it alone); a side
of several runs must be one seed group. Each run's per-image test scores come from its
test_captions.jsonl (capgen-train writes it when it tests the best checkpoint); a seed group's
score of an image is the mean over its runs. The images every run of both sides was tested
on are compared with a paired bootstrap over images (capgen.metrics.significance): each side's
mean, the difference A - B, its 95% percentile interval and a two-sided p-value, for per-image
CIDEr(-D) and BLEU-4.
"""

from __future__ import annotations

import glob
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..metrics.significance import PairedDifference, paired_bootstrap
from .run_dir import UnreadableRecord, find_runs, read_summary, read_test_captions, run_overrides

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
            if key.lstrip("+~") != "resume":  # where a run continued from: the same settings, not a different run
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


def compare(roots: list[Path], metrics: list[str], group_seeds: bool = True) -> Table:
    runs = [load_run(p) for root in roots for p in find_runs(root)]
    if not runs:
        raise SystemExit(f"no capgen-train runs (folders with .hydra/config.yaml) under {', '.join(map(str, roots))}")
    keys = sorted({k for r in runs for k in r.overrides})
    # An override that is the same in every run says nothing about their differences.
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    common = [f"{k}={runs[0].overrides[k]}" for k in keys if k not in varying]
    entries = seed_groups(runs) if group_seeds else [[r] for r in runs]

    def values(entry: list[Run], metric: str) -> list[float]:
        return [r.metrics[metric] for r in entry if metric in r.metrics]

    def rank(entry: list[Run]) -> tuple:  # completed runs by the first metric (a group's mean), best first; then the rest
        first = values(entry, metrics[0])
        value = statistics.mean(first) if first else math.nan
        return (entry[0].status != "completed", math.isnan(value), 0.0 if math.isnan(value) else -value)

    entries.sort(key=rank)
    base = Path(os.path.commonpath([r.path.absolute() for r in runs]))  # names are shown relative to it

    def name(run: Run) -> str:
        return str(run.path.absolute().relative_to(base)) if run.path.absolute() != base else run.path.name

    header = [*varying, "status", *metrics, "run"]  # the folder last: it repeats the overrides
    rows, notes = [], []
    for entry in entries:
        settings = [",".join(dict.fromkeys(r.overrides.get(k, "-") for r in entry)) for k in varying]
        cells = [metric_cell(values(entry, m), grouped=len(entry) > 1) for m in metrics]
        rows.append([*settings, entry[0].status, *cells, " ".join(name(r) for r in entry)])
        if entry[0].status != "completed":
            notes.append(f"{name(entry[0])}: {entry[0].status}: {entry[0].error}")
    return Table(header, rows, common, notes)


def without_seed(run: Run) -> tuple:
    """The run's overrides apart from `seed`: equal for the runs of one seed group."""
    return tuple(sorted((k.lstrip("+"), v) for k, v in run.overrides.items() if k.lstrip("+~") != "seed"))


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """The completed runs that differ only by seed, a list each (in the order of `runs`); every
    other run in a list of its own."""
    by_settings: dict[tuple, list[Run]] = {}
    for run in runs:
        key = without_seed(run) if run.status == "completed" else ("run", str(run.path))
        by_settings.setdefault(key, []).append(run)
    return list(by_settings.values())


def metric_cell(values: list[float], grouped: bool) -> str:
    """A run's value, or a group's "mean +- sd (n)" (sample sd; "mean (1)" when one run has it)."""
    if not values:
        return "-"
    if not grouped:
        return f"{values[0]:.4f}"
    if len(values) == 1:
        return f"{values[0]:.4f} (1)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)})"


@dataclass
class Paired:
    sides: tuple[list[Path], list[Path]]  # the runs of A and of B
    images: tuple[int, int, int]  # tested on by every run of A, of B, and by all of them (compared)
    results: dict[str, PairedDifference]  # per-image metric -> the bootstrap's answer
    resamples: int
    seed: int


def side_runs(spec: str) -> list[Path]:
    """The runs a --paired argument names: a run folder, a folder of runs, or a glob pattern of
    such folders; several runs must differ only by seed (one seed group)."""
    path = Path(spec)
    matches = [path] if path.exists() else [Path(p) for p in sorted(glob.glob(spec))]
    found = [r for m in matches if m.is_dir() for r in find_runs(m)]
    if not found:
        where = "in that folder" if path.exists() else "matching that pattern"
        raise ValueError(f"--paired {spec}: no capgen-train run folders (with .hydra/config.yaml) {where}")
    runs = [load_run(r) for r in found]
    unreadable = [r for r in runs if r.status == "unreadable"]
    if unreadable:
        raise ValueError(f"--paired {spec}: {unreadable[0].error}")
    if len({without_seed(r) for r in runs}) > 1:
        keys = sorted({k for r in runs for k, _ in without_seed(r)})
        differ = [k for k in keys if len({dict(without_seed(r)).get(k) for r in runs}) > 1]
        raise ValueError(
            f"--paired {spec}: its {len(runs)} runs differ by more than seed (also by {', '.join(differ)}), so they "
            f"are not one seed group. Name the runs of one configuration, e.g. a quoted glob that matches only their "
            f"folders ('outputs/train/multirun/*model=attn*'), or a single run folder."
        )
    return found


def paired(spec_a: str, spec_b: str, resamples: int = 10000, seed: int = 0) -> Paired:
    """A against B (see the module docstring); each spec as side_runs takes it."""
    sides = side_runs(spec_a), side_runs(spec_b)
    scores = [[read_test_captions(r) for r in runs] for runs in sides]
    in_side = [set.intersection(*(set(s) for s in side)) for side in scores]
    images = sorted(in_side[0] & in_side[1])
    if not images:
        raise ValueError(
            f"--paired {spec_a} {spec_b}: the two sides were tested on no image in common ({len(in_side[0])} and "
            f"{len(in_side[1])} images), so they cannot be compared image by image; compare runs tested on the same "
            f"data (the same data config and test split)."
        )
    every = [row for side in scores for s in side for row in (s[i] for i in images)]
    metrics = [m for m in ("CIDEr", "BLEU-4") if all(m in row for row in every)]
    if not metrics:
        raise ValueError(f"--paired {spec_a} {spec_b}: no per-image metric (CIDEr, BLEU-4) is in every run's "
                         f"test_captions.jsonl; the runs were tested without BLEU and CIDEr")

    def mean_over_runs(side: list[dict], metric: str) -> list[float]:  # per image, in `images` order
        return [math.fsum(s[i][metric] for s in side) / len(side) for i in images]

    a, b = ({m: mean_over_runs(side, m) for m in metrics} for side in scores)
    results = paired_bootstrap(a, b, resamples=resamples, seed=seed)
    return Paired(sides, (len(in_side[0]), len(in_side[1]), len(images)), results, resamples, seed)


def paired_as_text(result: Paired, labels: tuple[str, str]) -> str:
    def side(label: str, runs: list[Path]) -> str:
        return f"{label} ({len(runs)} run{'s' if len(runs) > 1 else ''}, seeds averaged)" if len(runs) > 1 else label

    (n_a, n_b, n) = result.images
    lines = [f"A = {side(labels[0], result.sides[0])}", f"B = {side(labels[1], result.sides[1])}",
             f"paired bootstrap over the {n} test images both were tested on (A {n_a}, B {n_b}), "
             f"{result.resamples} resamples, seed {result.seed}"]
    table = [["metric", "A", "B", "A-B", "95% interval", "p"]]
    for metric, r in result.results.items():
        table.append([metric, f"{r.mean_a:.4f}", f"{r.mean_b:.4f}", f"{r.difference:+.4f}",
                      f"[{r.low:+.4f}, {r.high:+.4f}]", f"{r.p_value:.4f}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
    return "\n".join(lines)


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
