"""`msgnet report`: a short Markdown + JSON report of a run and its samples."""

from __future__ import annotations

import argparse
from pathlib import Path


def _timing(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="short report of a run: losses, curves, samples, timings",
                       description="Write RUN/report.md and RUN/report.json: per stage its last metrics and "
                       "curves, the samples' preview and speed, and the given timings. For the full "
                       "evaluation (U-Net benchmark, FID, fidelity) see `msgnet eval report`.")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--samples", type=Path, default=None, help="a dataset written by `msgnet sample`")
    p.add_argument("--timing", type=_timing, action="append", default=[], metavar="NAME=SECONDS")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from msgnet.evaluation.run_report import write_run_report

    md = write_run_report(args.run, args.samples, dict(args.timing))
    print(f"report: {md}")
    return 0
