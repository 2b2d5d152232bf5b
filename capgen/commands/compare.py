"""The comparison table of training runs (capgen-compare): their overrides against their final
metrics, read from the run folders (capgen.runs.records); and the paired comparison of two
runs, or two seed groups, image by image on their test set.

A run is a folder holding .hydra/config.yaml that capgen-train wrote (capgen.runs.folders.is_run:
the folders of capgen-eval, caption, demo and prepare are no runs); its overrides come
from .hydra/overrides.yaml and its metrics from summary.json (the best epoch's val/* and the
test/* of that checkpoint; an interrupted or failed run's best epoch so far, and no test/*).
A `test=false` given at a resume that kept the run's test/* is left out of its overrides (kept_test).
Failed runs that recorded no metrics (a setting refused before training, say), and runs
whose summary.json or overrides.yaml cannot be read (unreadable), are not rows of the table:
they are listed below it, one line each with the reason, and their settings (a misspelt key,
say) make no column. Of the runs in the table, overrides they all share are printed once
above it; the ones that differ get a column each, and the run's folder comes last. Rows are
sorted by the first metric, best first; unfinished, interrupted and failed runs come last.
Below the table, each run that did not complete has a line: its signal or error, its best
checkpoint so far and the resume that continues it (or, stopped before its first checkpoint,
the command that starts it again). A run whose latest resume failed and left it as it was
(summary.json's resume_failed, capgen.runs.records) keeps its own status and row, and has a
line in a list of its own: that resume's error and its command, to run again. As text (`as_text`) the table fits a
width (120 columns by default): long column names are cut to their last part(s), long values
abbreviated with "…" (a start that all values of a column share first), the run column never
so far that two rows read the same (the table is wider then). A metric asked for by name that no run has is refused.

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

import difflib
import glob
import math
import os
import shlex
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..config.argv import PATH_KEYS
from ..metrics.significance import PairedDifference, paired_bootstrap
from ..runs.folders import find_runs, run_overrides, start_again
from ..runs.records import UnreadableRecord, read_summary
from ..runs.tested import read_test_captions

DEFAULT_METRICS = ("val/CIDEr", "val/BLEU-4", "test/CIDEr", "test/BLEU-4")


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]  # key (as written, e.g. +trainer.fast_dev_run) -> value
    status: str  # completed, failed, interrupted, unfinished or unreadable
    metrics: dict[str, float]
    error: str = ""
    failed_resume: str = ""  # its latest resume failed and left it as it was: the note on it


def load_run(path: Path) -> Run:
    overrides = {}
    try:
        for line in run_overrides(path):
            key, _, value = line.partition("=")
            if key.lstrip("+~") != "resume":  # where a run continued from: the same settings, not a different run
                # A later value of the same key wins, under the name it was first given (a resume
                # sets `trainer.x=4` where the run added `+trainer.x=2`): one column, today's value.
                overrides[next((k for k in overrides if k.lstrip("+") == key.lstrip("+")), key)] = value
        summary = read_summary(path)
    except UnreadableRecord as e:  # listed as such, with what was read of it
        return Run(path, overrides, "unreadable", {}, str(e))
    if summary is None:
        return Run(path, overrides, "unfinished", {}, "no summary.json: still running, or stopped before the end")
    metrics = summary.get("metrics", {})
    return Run(path, kept_test(overrides, metrics), summary["status"], metrics, stop_note(path, summary),
               failed_resume_note(path, summary))


def kept_test(overrides: dict[str, str], metrics: dict[str, float]) -> dict[str, str]:
    """The overrides without `test=false` where the run has test/* scores all the same: a resume
    with test=false keeps the test of a best checkpoint it did not replace (capgen.runs.tested),
    so the run was tested as one without the setting, and a column or a shared `test=false`
    would say otherwise."""
    tested = any(k.startswith("test/") for k in metrics)
    return {k: v for k, v in overrides.items()
            if not (tested and k.lstrip("+~") == "test" and v.strip().strip("'\"").lower() == "false")}


def failed_resume_note(path: Path, summary: dict) -> str:
    """The line on a run whose latest resume failed before it changed a checkpoint: the command
    to run again once its cause is fixed, and its error; "" for any other run."""
    failed = summary.get("resume_failed")
    if not isinstance(failed, dict):
        return ""
    command = failed.get("command") or f"capgen-train resume={shlex.quote(str(path))}"
    error = failed.get("error") or f"its error is in {path / str(failed.get('traceback', ''))}"
    return f"fix the cause, then run it again: {command}; error: {error}"


def stop_note(path: Path, summary: dict) -> str:
    """What the list below the table says of a run that did not complete: an interrupted one's
    signal, a failed one's error, each with its best checkpoint so far and the resume that
    continues it (the command for the folder as it is now: a copied or moved run's summary names
    where it ran); "" for a completed run."""
    status, here = summary["status"], shlex.quote(str(path))
    best = [f"best so far: {summary['best_checkpoint']}"] if summary.get("best_checkpoint") else []
    if status == "interrupted":
        # Stopped before its first checkpoint: nothing to resume, so the command that starts it
        # again, in its own folder where that was named (its folder holds nothing a new run loses).
        go_on = (f"continue with capgen-train resume={here}" if summary.get("resume") else
                 f"stopped before its first checkpoint; start it again: {start_again(path, PATH_KEYS['train'], True)}")
        return "; ".join([summary.get("signal", "a signal"), *best, go_on])
    if status != "failed":
        return ""
    error = summary.get("error") or f"its error is in {path / summary.get('traceback', 'error.txt')}"
    # A failed run resumes as an interrupted one does, from its last.ckpt, once the cause of its
    # error (the data, the machine, a setting given again at resume) is fixed.
    resumable = (path / "checkpoints" / "last.ckpt").is_file()
    go_on = [f"fix the cause, then continue with capgen-train resume={here}"] if resumable else []
    # The error last: it can be long, and a line cut to the table's width keeps the rest.
    return "; ".join([*best, *go_on, f"error: {error}"]) if best or go_on else error


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    common: list[str]  # overrides every run shares
    notes: list[str]  # one line per run that did not complete
    values: list[list[list[float]]] | None = None  # per row, per metric column: the runs' values
    failed_resumes: list[str] = field(default_factory=list)  # one line per run whose latest resume failed


def in_table(run: Run) -> bool:
    """Whether the run is a row: not when unreadable, nor when it failed before it recorded any
    metric (listed below the table instead); a failed run with scores so far is a row, as an
    interrupted one is, its status saying it did not complete."""
    return run.status != "unreadable" and not (run.status == "failed" and not run.metrics)


def compare(roots: list[Path], metrics: list[str] | None = None, group_seeds: bool = True) -> Table:
    """The table of the runs under `roots`; `metrics` given are checked against the runs' (see
    check_metrics), the default ones (None: DEFAULT_METRICS) are not: a run tested without the
    test split just has no test/* cells."""
    found = [load_run(p) for root in roots for p in find_runs(root)]
    if not found:
        raise SystemExit(f"no capgen-train runs under {', '.join(map(str, roots))} (folders whose .hydra/ capgen-train "
                         f"wrote; capgen-eval, caption, demo and prepare folders are not runs); give run folders, e.g. outputs/train")
    if metrics is None:
        metrics = list(DEFAULT_METRICS)
    else:
        check_metrics(metrics, {m for r in found for m in r.metrics}, ", ".join(map(str, roots)))
    runs = [r for r in found if in_table(r)]
    left_out = [r for r in found if not in_table(r)]
    keys = sorted({k for r in runs for k in r.overrides})
    # An override that is the same in every run of the table says nothing about their differences.
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
    base = Path(os.path.commonpath([r.path.absolute() for r in found]))  # names are shown relative to it

    def name(run: Run) -> str:
        return str(run.path.absolute().relative_to(base)) if run.path.absolute() != base else run.path.name

    header = [*varying, "status", *metrics, "run"]  # the folder last: it repeats the overrides
    rows, notes, numbers = [], [], []
    for entry in entries:
        settings = [",".join(dict.fromkeys(r.overrides.get(k, "-") for r in entry)) for k in varying]
        cells = [metric_cell(values(entry, m), grouped=len(entry) > 1) for m in metrics]
        rows.append([*settings, entry[0].status, *cells, " ".join(name(r) for r in entry)])
        numbers.append([values(entry, m) for m in metrics])
        if entry[0].status != "completed":
            notes.append(f"{name(entry[0])}: {entry[0].status}: {entry[0].error}")
    notes += [f"{name(r)}: {r.status}: {r.error}" for r in left_out]
    failed_resumes = [f"{name(r)}: {r.failed_resume}" for r in found if r.failed_resume]
    return Table(header, rows, common, notes, numbers, failed_resumes)


def check_metrics(metrics: list[str], available: set[str], where: str) -> None:
    """A metric no run has (a misspelt name) would be a column of "-" that sorts nothing:
    ValueError naming it, the close match and the names the runs have. Runs that have no
    metrics yet (all unfinished, say) leave nothing to check against."""
    if not available:
        return
    by_lower = {m.lower(): m for m in available}  # val/cider -> val/CIDEr: case is the usual slip
    for metric in metrics:
        if metric not in available:
            close = difflib.get_close_matches(metric.lower(), list(by_lower), n=1)
            hint = f" (did you mean {by_lower[close[0]]}?)" if close else ""
            raise ValueError(f"--metrics {metric}: no run under {where} has this metric in its summary.json{hint}; they have "
                             f"{', '.join(sorted(available))}. Give the names as listed (case matters).")


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
        raise ValueError(f"--paired {spec}: no capgen-train run folders (whose .hydra/ capgen-train wrote) {where}")
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


WIDTH = 120  # capgen-compare's default text width
_MIN_CELL = 8  # a settings or run column is not cut below this


def as_text(table: Table, width: int = WIDTH) -> str:
    """The table as lines of at most `width` characters (see the module docstring); the runs
    that did not complete (unreadable, failed without metrics: not rows; unfinished,
    interrupted, failed with metrics: rows too) in a short list below it, one line each. When
    the metrics as written ("2.8600 ± 0.0707 (2)") leave too little room, they are shown as
    "2.860±0.071" with the runs' count in an `n` column."""
    n_settings = table.header.index("status")
    names = short_names(table.header[:n_settings])
    header, rows = [*names, *table.header[n_settings:]], [list(r) for r in table.rows]
    for i in [*range(n_settings), len(header) - 1]:  # /mnt/data/coco/a, /mnt/data/coco/b: "…a", "…b", so a cut keeps what differs
        given = [row[i] for row in rows if row[i] != "-"]
        start = _shared_start(given)
        if start > _MIN_CELL:
            for row in rows:
                row[i] = row[i] if row[i] == "-" else "…" + row[i][start:]
    widths = _fitted(header, rows, n_settings, width)
    if sum(widths) + 2 * (len(widths) - 1) > width and table.values is not None:
        header, rows = _compact(header, rows, table.values, n_settings)
        widths = _fitted(header, rows, n_settings, width)
    lines = []
    if table.common:
        lines += textwrap.wrap("all runs: " + " ".join(table.common), width, subsequent_indent="  ",
                               break_on_hyphens=False)
    renamed = [f"{n} = {k}" for n, k in zip(names, table.header) if n != k]
    if renamed:
        lines += textwrap.wrap("columns: " + "; ".join(renamed), width, subsequent_indent="  ", break_on_hyphens=False)
    for row in [header, *rows]:
        lines.append("  ".join(abbreviate(cell, w).ljust(w) for cell, w in zip(row, widths)).rstrip())
    if table.notes:
        lines.append("runs that did not complete:")
        lines.extend(_note_line(note, width) for note in table.notes)
    if table.failed_resumes:
        lines.append(FAILED_RESUMES)
        lines.extend(_note_line(note, width) for note in table.failed_resumes)
    return "\n".join(lines)


FAILED_RESUMES = "resumes that failed (each run is as it was before it, its status and scores its own):"


def _note_line(note: str, width: int) -> str:
    """A note below the table, cut to `width` but never before the end of the command it gives
    (`capgen-train resume=<run>`, or the command line that starts a run again, to be copied
    whole): only what follows it, a failed run's error, is cut then, to at least 20 characters."""
    line = "  " + note
    command = line.find("capgen-train ")
    if command < 0:
        return abbreviate(line, width)
    end = line.find("; ", command)
    if end < 0:  # the command ends the note: kept whole, the line as long as it needs
        return line
    end += 2
    return line[:end] + abbreviate(line[end:], max(width - end, 20))


def _shared_start(values: list[str]) -> int:
    """The length of the start all `values` share, back to its last separator where that still
    cuts (2026-12-05_13-26-52 and 2026-12-05_13-27-27: "…26-52", "…27-27"); 0 for one value."""
    if len(set(values)) < 2:
        return 0
    shared = os.path.commonprefix(values)
    at_separator = max(shared.rfind(sep) for sep in "/_-=,. ") + 1
    return at_separator if at_separator > _MIN_CELL else len(shared)


def _fitted(header: list[str], rows: list[list[str]], n_settings: int, width: int) -> list[int]:
    """Column widths: the widest settings or run column is cut, one character at a time, until
    the table fits `width` or every one of them is down to its least width (metrics are never
    cut): _MIN_CELL, and for the run column the width that still tells every row's runs apart,
    the only thing that names a row."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    names = [row[-1] for row in rows]
    apart = next(w for w in range(widths[-1] + 1) if len({abbreviate(n, w) for n in names}) == len(set(names)))
    least = {**dict.fromkeys(range(n_settings), _MIN_CELL), len(header) - 1: max(_MIN_CELL, apart)}
    while sum(widths) + 2 * (len(widths) - 1) > width:
        above = [i for i in least if widths[i] > least[i]]
        if not above:
            break
        widths[max(above, key=lambda i: widths[i])] -= 1
    return widths


def _compact(header: list[str], rows: list[list[str]], values: list[list[list[float]]], n_settings: int):
    """The metric cells as "mean±sd" to 3 decimals, and an `n` column (the row's runs); a metric
    that fewer of them have keeps its own "(k)"."""
    metrics = slice(n_settings + 1, len(header) - 1)
    out = []
    for row, numbers in zip(rows, values):
        n = max((len(v) for v in numbers), default=0)
        cells = []
        for v in numbers:
            cell = "-" if not v else f"{v[0]:.3f}" if len(v) == 1 else f"{statistics.mean(v):.3f}±{statistics.stdev(v):.3f}"
            cells.append(cell + (f" ({len(v)})" if v and len(v) < n else ""))
        out.append([*row[:metrics.start], *cells, str(n), row[-1]])
    return [*header[:metrics.stop], "n", header[-1]], out


def abbreviate(text: str, width: int) -> str:
    """`text` cut to `width` characters, the cut marked with "…"."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def short_names(keys: list[str], longest: int = 16) -> list[str]:
    """Each override key longer than `longest` as its last dotted part(s), as few as keep the
    names apart (model.decoder.hidden_dim -> hidden_dim)."""
    out = []
    for key in keys:
        parts = key.lstrip("+~").split(".")
        name = key
        if len(key) > longest:
            for n in range(1, len(parts) + 1):
                name = ".".join(parts[-n:])
                same = [k for k in keys if k.lstrip("+~") == name or k.endswith("." + name)]
                if len(same) == 1 and name not in ("status", "run"):
                    break
        out.append(name)
    return out


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
    if table.failed_resumes:
        lines += ["", FAILED_RESUMES]
        lines.extend(f"- {note}" for note in table.failed_resumes)
    return "\n".join(lines) + "\n"
