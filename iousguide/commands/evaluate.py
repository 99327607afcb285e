"""``iousguide evaluate RESULTS TRUTH [RESULTS TRUTH ...] [--json OUT]``: score analysis results against phantom truth."""

from __future__ import annotations

import argparse
import json
import sys

from iousguide.errors import SettingsError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score analysis results (JSON lines) against phantom ground truth",
        description="Score per-frame results (from `iousguide analyze --out`) against a phantom truth file "
        "(recordings/<name>.truth.jsonl.gz, or the recording path itself). Give pairs: RESULTS TRUTH [RESULTS TRUTH ...].",
    )
    parser.add_argument("pairs", nargs="+", metavar="RESULTS TRUTH", help="results .jsonl and truth file (or recording)")
    parser.add_argument("--json", metavar="OUT", help="write the full report as JSON ('-' for stdout)")
    parser.add_argument("--modality", choices=("rfa", "mwa"), default="rfa",
                        help="heat-sink modality when a result does not name one (default rfa)")
    parser.add_argument("--near-mm", type=float, default=15.0,
                        help="score distance errors for vessels within this true distance (mm, default 15)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iousguide.evaluation import evaluate_files, format_table

    if len(args.pairs) % 2:
        raise SettingsError("evaluate expects pairs: RESULTS TRUTH [RESULTS TRUTH ...]")
    if not args.near_mm > 0:
        raise SettingsError(f"--near-mm must be positive, got {args.near_mm}")
    reports = []
    for results, truth in zip(args.pairs[::2], args.pairs[1::2]):
        report = evaluate_files(results, truth, modality=args.modality, near_mm=args.near_mm)
        reports.append(report)
        print(format_table(report), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        text = json.dumps({"recordings": reports}, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
    return 0
