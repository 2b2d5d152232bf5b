"""capgen-compare: a table of the training runs in folders, their overrides against their final
metrics; or two runs (or seed groups) compared image by image.

    capgen-compare outputs/train/multirun_2025-01-01_12-00-00
    capgen-compare outputs/train --metrics val/CIDEr test/CIDEr test/BLEU-4 --markdown runs.md
    capgen-compare --paired outputs/train/multirun/0_model=attn outputs/train/multirun/1_model=lstm
    capgen-compare --paired 'outputs/train/multirun/*model=attn*' 'outputs/train/multirun/*model=lstm*'

The table has a row per run, or per seed group: runs that differ only by seed share a row,
each metric as mean +- sd (n) over them (--each: a row per run). Its columns are the settings
(command-line overrides) that differ between the rows, the status, the metrics (the first
sorts, best first) and the run folder(s); settings every row shares are printed once above
it. It fits --width columns (120): long names and values are cut, marked with "…", but the
run folder never so far that two rows read the same. A --metrics name no run has is refused.
Failed and unreadable runs are not rows: they are listed below it with their error, one
line each (as are unfinished and interrupted runs, which are rows).

--paired A B: each side a run folder, a folder of runs or a quoted glob; a side of several runs
must be one seed group, its per-image scores averaged over its seeds. A paired bootstrap over
the test images both sides were tested on gives the difference of per-image CIDEr and BLEU-4,
its 95% interval and a two-sided p-value. See capgen.commands.compare and
capgen.metrics.significance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..commands.compare import DEFAULT_METRICS, WIDTH, as_markdown, as_text, compare, paired, paired_as_text
from ..config.argv import unwritable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capgen-compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path,
                        help="run folders, or folders to search for runs (e.g. outputs/train, a sweep's folder)")
    parser.add_argument("--metrics", nargs="+",
                        help="metric columns, from the runs' summary.json; the first one sorts (default: "
                             f"{' '.join(DEFAULT_METRICS)})")
    parser.add_argument("--markdown", type=Path,
                        help="also write the table, uncut, as Markdown to this file")
    parser.add_argument("--width", type=int, default=WIDTH,
                        help="the widest line of the printed table, in characters (default: %(default)s)")
    parser.add_argument("--each", action="store_true", help="a row per run: no seed groups")
    parser.add_argument("--paired", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="compare A and B image by image (a run folder, a folder of runs or a quoted glob each)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples for --paired (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed for --paired (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.markdown:  # before the runs are read: a table that cannot be written is found at once
        problem = markdown_problem(args.markdown)
        if problem:
            parser.error(f"--markdown {args.markdown}: {problem}")
    if args.paired:
        if args.folders:
            parser.error("give either folders (the table) or --paired RUN_A RUN_B, not both")
        if args.resamples < 1:
            parser.error(f"--resamples {args.resamples}: the bootstrap needs at least 1 resample (10000 is usual)")
        try:
            result = paired(*args.paired, resamples=args.resamples, seed=args.seed)
        except ValueError as e:  # a side without runs or per-image scores, no images in common: one paragraph
            parser.exit(2, f"capgen-compare: error: {e}\n")
        print(paired_as_text(result, tuple(args.paired)))
        return
    if not args.folders:
        parser.error("give the folders of the runs to list, or --paired RUN_A RUN_B")
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"{folder}: {'a file, not a folder' if folder.exists() else 'no such folder'}; give run folders")
    if args.width < 40:
        parser.error(f"--width {args.width}: give at least 40 characters (120 is the default)")
    try:
        table = compare(args.folders, args.metrics, group_seeds=not args.each)
    except ValueError as e:  # a metric no run has: one paragraph
        parser.exit(2, f"capgen-compare: error: {e}\n")
    print(as_text(table, args.width))
    if args.markdown:
        args.markdown.write_text(as_markdown(table))
        print(f"wrote {args.markdown}", file=sys.stderr)


def markdown_problem(path: Path) -> str | None:
    """Why the Markdown table cannot be written to `path`, or None."""
    folder = path.expanduser().absolute().parent
    if path.is_dir():
        return "a folder; give a file name, e.g. --markdown runs.md"
    if not folder.is_dir():
        return f"its folder {folder} does not exist; create it (mkdir -p {folder}) or give a file in an existing folder"
    why = unwritable(folder)
    return f"{why}; give a file in a writable folder" if why else None


if __name__ == "__main__":
    main()
