"""`msgnet run DIR --run RUN`: the user's whole job (:func:`msgnet.workflow.job.run_job`) from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.cli.common import add_device_argument, add_train_subset_argument, pair_policies
from msgnet.evaluation.benchmark.policy import DECLARED_POLICIES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="the whole job on your dataset: train, sample through QC, benchmark, report",
        description="Train msgnet on DIR (a preset derived from the data and --budget unless --config), sample "
        "--num pairs through quality control, run the U-Net benchmark on DIR's own splits (real, real + "
        "standard augmentation, real + copy-paste, both, and real + augmentation + msgnet pairs under several "
        "policies, one chosen on the validation split) and write RUN/report/report.md and report.html, whose "
        "first line says which way to use the pairs, or not to add them. Rerun the same command to resume.",
    )
    p.add_argument("data", type=Path, help="your dataset (msgnet format: train, val and test splits)")
    p.add_argument("--run", type=Path, required=True, help="run directory (created; reused on a rerun)")
    p.add_argument("--config", default=None, metavar="PRESET", help="a named preset instead of a derived one")
    p.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                   help="training minutes for a derived preset [30]")
    p.add_argument("--num", type=int, default=1000, help="generated pairs that pass QC [1000]")
    p.add_argument("--seed", type=int, default=0, help="sampling seed [0]")
    p.add_argument("--seeds", type=int, default=3, help="U-Net seeds of the benchmark [3]")
    p.add_argument("--min-steps", type=int, default=1500, help="U-Net steps at least [1500]")
    p.add_argument("--qc-steps", type=int, default=None, metavar="N", help="QC segmenter steps at least [1500]")
    p.add_argument("--qc-max-candidates", type=int, default=None, metavar="N",
                   help="give up sampling after N candidates [20 x --num]")
    p.add_argument("--probe-pairs", type=int, default=None, metavar="N",
                   help="pairs drawn with each candidate guidance scale and codes temperature before sampling, "
                   "to choose them (RUN/probe.json) [96]")
    p.add_argument("--policies", type=pair_policies, default=None, metavar="P[;P...]",
                   help="ways to use the pairs tried on the validation split (see `msgnet eval augment --help`) "
                   f"[{'; '.join(DECLARED_POLICIES)}]")
    add_train_subset_argument(p)  # the generator, the QC segmenter and every U-Net see the same N images
    add_device_argument(p)
    p.set_defaults(func=_run, writes_run=True)


def _run(args: argparse.Namespace) -> int:
    from msgnet.workflow.job import JobRequest, run_job

    summary = run_job(JobRequest(
        data=args.data, run=args.run, preset=args.config, budget=args.budget, num=args.num, seed=args.seed,
        seeds=args.seeds, min_steps=args.min_steps, qc_steps=args.qc_steps, max_candidates=args.qc_max_candidates,
        probe_pairs=args.probe_pairs, policies=args.policies, subset=args.train_subset, device=args.device))
    print(summary["headline"])
    print(f"report: {args.run / 'report' / 'report.md'} and report.html")
    return 0
