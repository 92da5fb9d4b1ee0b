"""`msgnet run DIR --run RUN`: the user's whole job — train, sample through QC, benchmark, report.

Each step resumes where it stopped, so rerunning the same command after an interruption
finishes the job: training resumes from its checkpoints, sampling from ``RUN/generated.partial``,
the benchmark from ``RUN/benchmark.json``; the report is rewritten at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.cli.common import add_device_argument, add_train_subset_argument, pair_policies
from msgnet.errors import UsageError

# The simple baselines beside which the pairs are judged; the pairs enter under declared policies.
SETTINGS = ["real", "augment", "copy-paste", "augment+copy-paste"]
KEEP_POLICIES = 2  # successive halving: policies that train every seed after the first
PATIENCE = 6  # U-Net validation points without a better one before it stops (of 20)


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
                   "[union; on-top@0.25; on-top@1; on-top@0.25,weight=0.5; on-top@0.5,filter=2; pretrain@0.3]")
    add_train_subset_argument(p)  # the generator, the QC segmenter and every U-Net see the same N images
    add_device_argument(p)
    p.set_defaults(func=_run)


def _train(args: argparse.Namespace) -> int:
    from msgnet.cli import main as cli

    cmd = ["train", "all", "--data", str(args.data), "--run", str(args.run)]
    if args.config:
        cmd += ["--config", args.config]
    elif args.budget is not None and not (args.run / "preset.yaml").is_file():
        cmd += ["--budget", str(args.budget)]
    if args.train_subset is not None:
        cmd += ["--train-subset", str(args.train_subset)]
    if args.run.exists():
        cmd.append("--resume")
    if args.device:
        cmd += ["--device", args.device]
    return cli(cmd)  # on failure train has printed its one-line reason


def _qc_settings(args: argparse.Namespace):
    import dataclasses

    from msgnet.evaluation.qc.checker import QCSettings
    from msgnet.evaluation.qc.segmenter import QC_PROTOCOL

    protocol = QC_PROTOCOL if args.qc_steps is None else dataclasses.replace(QC_PROTOCOL, min_steps=args.qc_steps)
    return QCSettings(protocol=protocol)


def _prepare_qc(args: argparse.Namespace):
    """Quality control of the run, its segmenter trained on the run's training images before the generator,
    so that the codes prior's validation can score its samples with it (val_adherence)."""
    from msgnet.device import choose_device
    from msgnet.sampling.checked import prepare_run_qc
    from msgnet.sampling.run import record_training_data

    record_training_data(args.run, args.data, args.train_subset)
    return prepare_run_qc(args.run, _qc_settings(args), choose_device(args.device))


def _sample(args: argparse.Namespace, qc) -> tuple[Path | None, str | None]:
    """The QC-kept pairs, or None and why there are none."""
    from msgnet.sampling.checked import TooFewPassed, generate_checked
    from msgnet.sampling.pipeline import GenerationSettings
    from msgnet.sampling.probe import PROBE_PAIRS, choose_sampling

    out = args.run / "generated"
    if out.is_dir():
        return out, None
    qc_settings = qc.settings
    settings, probe = choose_sampling(args.run, GenerationSettings(num=args.num, seed=args.seed, batch_size=64),
                                      qc, args.device, num=args.probe_pairs or PROBE_PAIRS)
    print(f"msgnet run: sampling with guidance {settings.guidance:g} and codes temperature "
          f"{settings.temperature_codes:g}, chosen by a probe of {len(probe['rows'])} settings (RUN/probe.json)")
    partial = out.with_name(out.name + ".partial")
    try:
        _, record = generate_checked(args.run, out, settings, qc_settings,
                                     max_candidates=args.qc_max_candidates, resume=partial.is_dir(),
                                     device=args.device, accept_fewer=True, qc=qc)
    except TooFewPassed as exc:
        print(f"msgnet run: {exc}")  # not a single pair passed within the cap
        return None, exc.summary
    return out, _fewer_note(record)


def _fewer_note(record: dict) -> str | None:
    if not record.get("stopped_at_cap"):
        return None
    rate = record["pass_rate"]
    return (f"only {rate['kept']} of the {record['requested']} requested pairs passed quality control in "
            f"{record['candidates']} candidates (pass rate {100 * rate['rate']:.2f}%); the benchmark uses those")


def _run(args: argparse.Namespace) -> int:
    from msgnet.evaluation.benchmark.protocol import UNetProtocol
    from msgnet.evaluation.benchmark.request import AugmentRequest, run_augment_benchmark
    from msgnet.evaluation.job_report import write_job_report

    if args.num < 1 or args.seeds < 1 or args.min_steps < 1:
        raise UsageError("--num, --seeds and --min-steps: must be at least 1")
    if args.probe_pairs is not None and args.probe_pairs < 2:
        raise UsageError("--probe-pairs: must be at least 2 (diversity compares each pair with the others)")
    if args.config and args.budget is not None:
        raise UsageError("--budget: only for a derived preset (leave out --config)")
    from msgnet.data.format import open_dataset
    from msgnet.evaluation.benchmark.policy import DECLARED_POLICIES

    policies = list(DECLARED_POLICIES) if args.policies is None else args.policies
    dataset = open_dataset(args.data)
    if not dataset.info.splits.get("val") or not dataset.info.splits.get("test"):
        raise UsageError(f"{args.data / 'dataset.json'}: `msgnet run` needs train, val and test splits "
                         "(import with --val-fraction and --test-fraction)")
    print("msgnet run: 1/4 training (the quality-control segmenter first, then the generator)")
    qc = _prepare_qc(args)
    code = _train(args)
    if code:
        return code
    print("msgnet run: 2/4 sampling through quality control")
    generated, note = _sample(args, qc)
    print("msgnet run: 3/4 U-Net benchmark")
    json_path = args.run / "benchmark.json"
    settings = SETTINGS if generated is not None else [s for s in SETTINGS if "synthetic" not in s]
    result = run_augment_benchmark(AugmentRequest(
        real=args.data, synthetic=generated, seeds=args.seeds, settings=settings, policies=policies,
        keep_policies=KEEP_POLICIES, subsets=[args.train_subset] if args.train_subset is not None else None,
        protocol=UNetProtocol(min_steps=args.min_steps, patience=PATIENCE), device=args.device,
        json_path=json_path, resume=json_path.is_file()))
    print("msgnet run: 4/4 report")
    summary = write_job_report(args.run / "report", args.data, args.run, result, generated, note)
    print(summary["headline"])
    print(f"report: {args.run / 'report' / 'report.md'} and report.html")
    return 0
