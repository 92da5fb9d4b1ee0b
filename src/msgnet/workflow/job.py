"""The user's whole job on their dataset: train, sample through QC, benchmark, report.

Each step resumes where it stopped, so calling :func:`run_job` again after an interruption
finishes the job: training resumes from its checkpoints, sampling from ``RUN/generated.partial``,
the benchmark from ``RUN/benchmark.json``; the report is rewritten at the end.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from msgnet.config import load_preset
from msgnet.data.checks import check_count, is_whole
from msgnet.data.format import open_dataset
from msgnet.device import choose_device
from msgnet.errors import UsageError
from msgnet.evaluation.benchmark.policy import DECLARED_POLICIES, PairPolicy
from msgnet.evaluation.benchmark.protocol import UNetProtocol
from msgnet.evaluation.benchmark.request import AugmentRequest, run_augment_benchmark
from msgnet.evaluation.job_report import write_job_report
from msgnet.evaluation.qc.checker import QCSettings, qc_protocol
from msgnet.io import ensure_output_apart, paths_as_fields
from msgnet.locks import writing
from msgnet.preset_derivation import check_budget
from msgnet.run_dir import RunDir
from msgnet.sampling.pipeline import GenerationSettings
from msgnet.sampling.run import record_training_data
from msgnet.workflow.checked import TooFewPassed, generate_checked, prepare_run_qc
from msgnet.workflow.probe import PROBE_PAIRS, choose_sampling
from msgnet.workflow.train import train

logger = logging.getLogger(__name__)

# The simple baselines beside which the pairs are judged; the pairs enter under declared policies.
SETTINGS = ("real", "augment", "copy-paste", "augment+copy-paste")
# Successive halving (docs/pair-policies.md, "What the benchmark costs"): the policy and the two simple
# baselines best on the first seed's validation DICE train the other seeds.
KEEP_POLICIES = 1
KEEP_BASELINES = 2
PATIENCE = 6  # U-Net validation points without a better one before it stops (of 20)


@dataclass(frozen=True)
class JobRequest:
    """What :func:`run_job` does. ``data``, ``run``: folders, as ``str`` or ``Path``; ``preset``: a named
    preset (None: derived from the data and ``budget`` minutes); ``num``: pairs wanted through quality
    control; ``seeds``, ``min_steps``: the U-Net benchmark; ``policies``: ways to use the pairs tried on
    validation (None: the declared ones). Every value is checked when the request is made, naming its
    field, so that nothing is refused after hours of training."""

    data: Path
    run: Path
    preset: str | None = None
    budget: float | None = None
    num: int = 1000
    seed: int = 0
    seeds: int = 3
    min_steps: int = 1500
    qc_steps: int | None = None
    max_candidates: int | None = None
    probe_pairs: int | None = None
    policies: Sequence[str] | None = None
    subset: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        paths_as_fields(self, ("data", "run"))
        if self.policies is not None:
            object.__setattr__(self, "policies", tuple(self.policies))
        self.validate()

    def validate(self) -> None:
        for name in ("num", "seeds", "min_steps"):
            check_count(name, getattr(self, name), 1)
        if self.budget is not None:
            if not isinstance(self.budget, numbers.Real) or isinstance(self.budget, bool):
                raise UsageError(f"budget: minutes as a number, not {self.budget!r}")
            check_budget(self.budget)
        for name, least in (("max_candidates", 1), ("subset", 1), ("qc_steps", 1)):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), least)
        if self.probe_pairs is not None:
            if not is_whole(self.probe_pairs) or self.probe_pairs < 2:
                raise UsageError("probe_pairs: must be at least 2 (diversity compares each pair with the others)")
        if self.preset and self.budget is not None:
            raise UsageError("budget: only for a derived preset (give no preset)")
        if self.policies is not None:
            for spec in self.policies:
                try:
                    PairPolicy.parse(spec)
                except (ValueError, TypeError, AttributeError) as exc:
                    raise UsageError(f"policies: {exc}") from None
        ensure_output_apart(self.run, self.data, field="run")


def run_job(request: JobRequest) -> dict:
    """Train, sample through QC, benchmark and report; returns the report's summary (``headline`` first)."""
    request.validate()
    dataset = open_dataset(request.data)
    if not dataset.info.splits.get("val") or not dataset.info.splits.get("test"):
        raise UsageError(f"{request.data / 'dataset.json'}: the whole job needs train, val and test splits "
                         "(import it with validation and test fractions)")
    run = RunDir(request.run)
    run.read_manifest()  # a corrupt manifest is refused before hours of work, not after
    with writing(run.root):  # one job per run at a time
        logger.info("msgnet run: 1/4 training (the quality-control segmenter first, then the generator)")
        qc = _prepare_qc(request, run)
        _train(request, run)
        logger.info("msgnet run: 2/4 sampling through quality control")
        generated, note = _sample(request, run, qc)
        run.record_stage("sampling", kept=generated is not None, note=note)
        logger.info("msgnet run: 3/4 U-Net benchmark")
        result = _benchmark(request, run, generated)
        run.record_stage("benchmark", complete=bool(result.get("complete")))
        logger.info("msgnet run: 4/4 report")
        summary = write_job_report(run.report, request.data, run.root, result, generated, note)
        run.record_stage("report", headline=summary["headline"])
        return summary


def _train(request: JobRequest, run: RunDir) -> None:
    preset = load_preset(request.preset) if request.preset else None
    resume = run.root.exists()
    budget = request.budget if preset is None and not run.preset_yaml.is_file() else None
    train(run.root, request.data, preset, budget=budget, resume=resume, device=request.device,
          subset=request.subset)


def _prepare_qc(request: JobRequest, run: RunDir):
    """Quality control of the run, its segmenter trained on the run's training images before the generator,
    so that the codes prior's validation can score its samples with it (val_adherence)."""
    record_training_data(run.root, request.data, request.subset)
    return prepare_run_qc(run.root, QCSettings(protocol=qc_protocol(request.qc_steps)), choose_device(request.device))


def _sample(request: JobRequest, run: RunDir, qc) -> tuple[Path | None, str | None]:
    """The QC-kept pairs, or None and why there are none."""
    out = run.generated
    if out.is_dir():
        return out, None
    settings = GenerationSettings(num=request.num, seed=request.seed, batch_size=64, layout_source=None)
    settings, probe = choose_sampling(run.root, settings, qc, request.device, num=request.probe_pairs or PROBE_PAIRS)
    logger.info(f"msgnet run: sampling with guidance {settings.guidance:g}, codes temperature "
                f"{settings.temperature_codes:g} and {settings.layout_source} layouts, chosen by a probe of "
                f"{len(probe['rows'])} settings (RUN/probe.json)")
    partial = out.with_name(out.name + ".partial")
    try:
        _, record = generate_checked(run.root, out, settings, qc.settings, max_candidates=request.max_candidates,
                                     resume=partial.is_dir(), device=request.device, accept_fewer=True, qc=qc)
    except TooFewPassed as exc:
        logger.info(f"msgnet run: {exc}")  # not a single pair passed within the cap
        return None, exc.summary
    return out, _fewer_note(record)


def _fewer_note(record: dict) -> str | None:
    if not record.get("stopped_at_cap"):
        return None
    rate = record["pass_rate"]
    return (f"only {rate['kept']} of the {record['requested']} requested pairs passed quality control in "
            f"{record['candidates']} candidates (pass rate {100 * rate['rate']:.2f}%); the benchmark uses those")


def _benchmark(request: JobRequest, run: RunDir, generated: Path | None) -> dict:
    policies = list(DECLARED_POLICIES) if request.policies is None else list(request.policies)
    json_path = run.benchmark_json
    return run_augment_benchmark(AugmentRequest(
        real=request.data, synthetic=generated, seeds=request.seeds, settings=list(SETTINGS), policies=policies,
        keep_policies=KEEP_POLICIES, keep_baselines=KEEP_BASELINES, subsets=[request.subset] if request.subset is not None else None,
        protocol=UNetProtocol(min_steps=request.min_steps, patience=PATIENCE, compile=True), device=request.device,
        json_path=json_path, resume=json_path.is_file()))
