"""capgen-compare: a table of the training runs in folders, their overrides against their final metrics.

    capgen-compare outputs/train/multirun_2025-01-01_12-00-00
    capgen-compare outputs/train --metrics val/CIDEr test/CIDEr test/BLEU-4 --markdown runs.md

See capgen.training.compare for what a run is and how rows are sorted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..training.compare import DEFAULT_METRICS, as_markdown, as_text, compare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capgen-compare", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders, or folders to search for runs")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help="columns, the first one sorts (default: %(default)s)")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"{folder}: no such folder")
    table = compare(args.folders, args.metrics)
    print(as_text(table))
    if args.markdown:
        args.markdown.write_text(as_markdown(table))
        print(f"wrote {args.markdown}", file=sys.stderr)


if __name__ == "__main__":
    main()
