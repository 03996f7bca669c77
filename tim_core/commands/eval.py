"""`tim eval`: fusion metrics over IR / visible / fused folders paired by stem; prints the mean table."""

from __future__ import annotations

import argparse

from ..evaluate import evaluate_folders, mean_table
from ..files import ImageFileError
from ..metrics import CONVENTIONS

ERRORS = (ImageFileError, ValueError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ir", required=True, metavar="DIR", help="infrared images (or one file)")
    parser.add_argument("--vis", required=True, metavar="DIR", help="visible images (or one file)")
    parser.add_argument("--fused", required=True, metavar="DIR", help="fused images (or one file)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="matlab",
                        help="whose numbers to reproduce: MATLAB toolbox or CDDFuse evaluator "
                             "(default: %(default)s)")
    parser.add_argument("--metrics", metavar="EN,SD,...", default=None,
                        help="comma-separated subset (default: all of the convention)")
    parser.add_argument("--out", metavar="PREFIX", default=None,
                        help="write PREFIX.csv (per image), PREFIX.md (means), PREFIX.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    metrics = None if args.metrics is None else [m.strip() for m in args.metrics.split(",")]
    result = evaluate_folders(args.ir, args.vis, args.fused, args.convention, metrics,
                              args.out, progress=not args.no_progress)
    print(mean_table(result), end="")
    if args.out is not None:
        print(f"wrote {args.out}.csv, {args.out}.md, {args.out}.json")
    return 0
