"""`msgnet sample --qc`: sample until ``num`` pairs pass quality control, into a dataset that resumes.

A consumer of the engine's batches (:mod:`msgnet.sampling.engine`): each is scored by the QC filter
(:mod:`msgnet.workflow.qc_filter`) and its passing pairs are written in candidate order until ``num`` are
kept; candidate ``i`` is pair ``i`` of plain sampling with the same seed, so a seed always gives the same
pairs, and an interrupted run resumes to the same result. Every candidate, kept or not, gets a row in
``qc.csv``; the worst rejected ones are kept aside for ``rejected.png``. A cap on the number of
candidates stops a run whose pass rate is too low, with the figures.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from msgnet.data.format import open_dataset
from msgnet.errors import UsageError
from msgnet.evaluation.qc.checker import QCSettings, QualityControl
from msgnet.evaluation.qc.request import QC_KEY
from msgnet.sampling.pipeline import GenerationSettings, SamplingJob, remove_partial
from msgnet.sampling.run import read_run_info, run_training_data
from msgnet.workflow.qc_filter import (ROWS_FILE, WORST_DIR, FolderStore, QCFilter, TooFewPassed, candidate_cap,
                                       checking_qc)

logger = logging.getLogger(__name__)

__all__ = ["ROWS_FILE", "WORST_DIR", "TooFewPassed", "generate_checked", "prepare_run_qc"]


def prepare_run_qc(run_dir: Path | str, qc_settings: QCSettings, device: torch.device,
                   progress: bool = True) -> QualityControl:
    """Quality control against the run's own training data (its segmenter cached in ``RUN/qc/segmenter``)."""
    return checking_qc(run_dir, read_run_info(Path(run_dir)), qc_settings, device, progress=progress)


def generate_checked(run_dir: Path | str, out: Path | str, settings: GenerationSettings, qc_settings: QCSettings,
                     real: Path | None = None, segmenter_dir: Path | None = None,
                     max_candidates: int | None = None, resume: bool = False, device: str | None = None,
                     progress: bool = True, accept_fewer: bool = False,
                     qc: QualityControl | None = None) -> tuple[Path, dict]:
    """Sample until ``settings.num`` pairs pass QC; returns the dataset and its QC record.

    ``real``: the real set to check against (default: the run's training data); ``qc``: quality
    control already prepared against it (:func:`prepare_run_qc`), else it is prepared here.
    ``max_candidates``: stop after this many candidates (default ``20 x num``): with fewer than
    ``num`` kept that is an error, unless ``accept_fewer`` (then the set holds the pairs kept so
    far, at least one, and its record says so).
    """
    run_dir, out = Path(run_dir), Path(out)
    cap = candidate_cap(max_candidates, settings.num, accept_fewer)
    job, qc = _open_checked(run_dir, out, settings, qc_settings, real, segmenter_dir, resume, device, progress, qc)
    logger.info(qc.describe_text())
    partial = job.partial
    assert partial is not None
    store = FolderStore(partial.dir, partial.state.get("csv_bytes", 0))
    keeper = QCFilter(qc, settings.num, cap, partial.state, store)
    start = max(partial.state["done_batches"], default=-1) + 1
    for batch in job.engine.iter_batches(job.request.unbounded(), keeper.batches(start), keeper.progress(progress)):
        take, update = keeper.check(batch)
        provenance = None if batch.provenance is None else [batch.provenance[k] for k in take]
        # The progress record is written last (write_batch): a batch counts once its files exist.
        partial.write_batch(batch.index, partial.state["kept"], batch.images[take], batch.layouts[take],
                            keeper.seconds, provenance=provenance, extra=update)
        keeper.committed()  # only now: the saved record no longer names the dropped pairs
    if partial.state["kept"] < settings.num:
        _stop_at_cap(job, keeper, out, accept_fewer)  # raises unless the pairs kept so far will do
    report = keeper.report(job.run.info.palette)

    def write_qc_files(directory: Path) -> None:
        report.write(directory, out)
        store.remove()

    return job.finish({QC_KEY: report.record}, write_qc_files), report.record


def _open_checked(run_dir: Path, out: Path, settings: GenerationSettings, qc_settings: QCSettings,
                  real: Path | None, segmenter_dir: Path | None, resume: bool, device: str | None, progress: bool,
                  qc: QualityControl | None) -> tuple[SamplingJob, QualityControl]:
    """The sampling job and the quality control it is checked by; refused before any sampling, nothing is left."""
    recorded, _ = run_training_data(run_dir)
    real_ds = open_dataset(real or recorded)  # unreadable: refused before the output is opened
    job = SamplingJob.open(run_dir, out, settings, resume, device,
                           record_extra={"qc": qc_settings.to_json(), "qc_real": str(real_ds.root.resolve())})
    assert job.partial is not None
    try:
        if qc is None:
            qc = checking_qc(run_dir, job.run.info, qc_settings, job.run.device, real, segmenter_dir, progress)
    except UsageError:
        job.partial.close()
        if not job.partial.state["done_batches"]:
            remove_partial(out)  # refused before anything was sampled: leave nothing behind
        raise
    return job, qc


def _stop_at_cap(job: SamplingJob, keeper: QCFilter, out: Path, accept_fewer: bool) -> None:
    """The candidate cap is reached: keep the pairs so far (``accept_fewer``, at least one), else raise
    :class:`TooFewPassed` with the QC report written beside the candidates."""
    partial, state = job.partial, keeper.state
    assert partial is not None
    if accept_fewer and state["kept"] > 0:
        rate = state["passed"] / max(1, state["candidates"])
        logger.info(f"qc: the cap of {keeper.cap} candidates is reached with {state['kept']} of {keeper.num} pairs kept "
              f"(pass rate {100 * rate:.2f}%); keeping those")
        return
    summary = keeper.shortfall()
    # The diagnosis matters most exactly now: the report is written beside the candidates.
    keeper.report(job.run.info.palette).write(partial.dir, out)
    partial.close()  # the candidates stay for a --resume with a higher cap
    raise TooFewPassed(f"{out}: {summary}; the cap `max_candidates` {keeper.cap} is reached (qc.csv, qc.json "
                       f"and rejected.png in {partial.dir}). Train the run longer, loosen the thresholds, "
                       "or raise the cap and `resume`", summary)
