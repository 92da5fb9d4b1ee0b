"""`msgnet qc`: score every generated pair against the real data; keep the ones that pass."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.cli.common import add_device_argument


def add_threshold_arguments(p: argparse.ArgumentParser) -> None:
    """The QC options shared by `msgnet qc` and `msgnet sample --qc`."""
    g = p.add_argument_group("quality-control thresholds (default: derived from the real validation pairs)")
    g.add_argument("--real-keep", type=float, default=0.95,
                   help="share of the real validation pairs the derived thresholds keep [0.95]")
    g.add_argument("--min-dice", type=float, default=None, help="reject a pair whose consistency DICE is lower")
    g.add_argument("--min-found-fraction", type=float, default=None,
                   help="reject a pair in which the segmenter finds a smaller share of its objects")
    g.add_argument("--min-pixel-distance", type=float, default=None,
                   help="flag a near-copy: pixel distance, sqrt(2 - 2 x correlation), to the nearest training "
                   "image below this")
    g.add_argument("--min-feature-distance", type=float, default=None,
                   help="flag a near-copy: segmenter-feature distance to the nearest training image below this")
    g.add_argument("--min-object-pixels", type=int, default=None, help="reject objects smaller than this")
    g.add_argument("--min-contrast", type=float, default=None, help="reject images with a lower pixel std (0-1)")
    g.add_argument("--max-saturation", type=float, default=None,
                   help="reject images with a larger share of pixels at full intensity")
    g.add_argument("--segmenter", type=Path, default=None, metavar="DIR",
                   help="where the consistency segmenter is cached [RUN/qc/segmenter]")
    g.add_argument("--qc-seed", type=int, default=0, help="seed of the consistency segmenter's training")
    g.add_argument("--qc-steps", type=int, default=None, metavar="N",
                   help="train the consistency segmenter for at least N steps (and one epoch) [1500]")


def qc_settings_from_args(args: argparse.Namespace):
    """The flags as QCSettings fields; the library checks the values (and names the field, which the
    command line reports as its flag)."""
    from msgnet.evaluation.qc.checker import THRESHOLD_FIELDS, QCSettings, qc_protocol

    thresholds = {name: getattr(args, name) for name in THRESHOLD_FIELDS}
    return QCSettings(real_keep=args.real_keep, seed=args.qc_seed, protocol=qc_protocol(args.qc_steps), **thresholds)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "qc", help="quality control of generated image + annotation pairs",
        description="Score every pair of a generated set: consistency (a U-Net trained once on the real "
        "training split segments the image; DICE against the pair's layout, objects found), the dataset's "
        "rule, memorisation (nearest real training image in pixel and feature space) and degenerate output "
        "(empty layouts, blank or saturated images, tiny objects). Thresholds come from the real validation "
        "pairs scored the same way. Writes qc.csv, qc.json, rejected.png and qc_histograms.png into --out "
        "(with the kept pairs as a dataset) or, without --out, into DATA-qc/ beside DATA (never into DATA).",
    )
    p.add_argument("--data", type=Path, required=True, help="the generated set")
    p.add_argument("--real", type=Path, required=True, help="the real set it imitates (train, val splits)")
    p.add_argument("--out", type=Path, default=None, help="write the kept pairs here as a dataset")
    add_threshold_arguments(p)
    add_device_argument(p)
    p.set_defaults(func=_qc)


def _qc(args: argparse.Namespace) -> int:
    from msgnet.evaluation.qc.request import QCRequest, format_summary, run_qc

    req = QCRequest(data=args.data, real=args.real, out=args.out, segmenter=args.segmenter,
                    settings=qc_settings_from_args(args), device=args.device)
    summary = run_qc(req)
    print(format_summary(summary))
    print(f"wrote {summary['report_dir']} (qc.csv, qc.json, rejected.png, qc_histograms.png)")
    return 0
