"""`msgnet sample --qc`: sample until ``num`` pairs pass quality control.

Batches are drawn exactly as plain sampling draws them (batch ``b`` from a generator seeded by
``(seed, b)``), every candidate is scored by :class:`msgnet.evaluation.qc.checker.QualityControl`, and the
passing ones are written in candidate order until ``num`` are kept; so a seed always gives the
same pairs, and an interrupted run resumes to the same result. Every candidate, kept or not,
gets a row in ``qc.csv``; the worst rejected ones are kept aside for ``rejected.png``.
A cap on the number of candidates stops a run whose pass rate is too low, with the figures.
"""

from __future__ import annotations

import collections
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from msgnet.data.format import image_name, open_dataset, write_files
from msgnet.errors import UsageError
from msgnet.evaluation.qc.checker import QCSettings, QualityControl, pass_rate
from msgnet.evaluation.qc.outputs import csv_header, csv_rows, pair_caption, read_csv_table, severity_key
from msgnet.evaluation.qc.request import (QC_KEY, REJECTED_SHOWN, check_compatible, qc_record,
                                          write_figures_and_summary)
from msgnet.run_dir import RunDir
from msgnet.sampling.pipeline import GenerationSettings, SamplingJob, remove_partial
from msgnet.sampling.run import read_run_info, run_training_data

ROWS_FILE = "qc_rows.csv"


class TooFewPassed(UsageError):
    """The candidate cap was reached before enough pairs passed quality control (``summary``: why)."""

    def __init__(self, message: str, summary: str):
        super().__init__(message)
        self.summary = summary
WORST_DIR = "rejected"


def prepare_run_qc(run_dir: Path | str, qc_settings: QCSettings, device: torch.device,
                   progress: bool = True) -> QualityControl:
    """Quality control against the run's own training data (its segmenter cached in ``RUN/qc/segmenter``)."""
    run = RunDir(run_dir)
    recorded, training_ids = run_training_data(run.root)
    real_ds = open_dataset(recorded)
    check_compatible(read_run_info(run.root), run.dataset_json, real_ds)
    return QualityControl.prepare(real_ds, run.qc_segmenter, qc_settings, device, training_ids,
                                  progress=progress)


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
    cap = max_candidates if max_candidates is not None else 20 * settings.num
    if cap < settings.num and not accept_fewer:
        raise UsageError(f"max_candidates: {cap} is fewer than --num {settings.num}")
    job, qc = _open_checked(run_dir, out, settings, qc_settings, real, segmenter_dir, resume, device, progress, qc)
    print(qc.describe_text())
    partial, num = job.partial, settings.num
    state = partial.state
    for key, value in (("kept", 0), ("passed", 0), ("candidates", 0), ("csv_bytes", 0), ("worst", []),
                       ("rejected_by", {})):
        state.setdefault(key, value)
    (partial.dir / WORST_DIR).mkdir(exist_ok=True)
    with open(partial.dir / ROWS_FILE, "a+b") as fh:  # rows of a batch that never completed are cut off
        fh.truncate(state["csv_bytes"])
    b = max(state["done_batches"], default=-1) + 1
    bar = tqdm(total=num, initial=state["kept"], desc="sampling with qc", unit="pair", disable=not progress)
    while state["kept"] < num:
        if state["candidates"] >= cap:
            bar.close()
            _stop_at_cap(job, qc, cap, out, accept_fewer)  # raises unless the pairs kept so far will do
            break
        bar.update(_check_batch(job, qc, b))
        bar.set_postfix(pass_rate=f"{state['passed'] / max(1, state['candidates']):.4f}", refresh=False)
        b += 1
    bar.close()
    record = _record(qc, state, num)

    def write_qc_files(directory: Path) -> None:
        _write_qc_report(directory, qc, record, state["worst"], out, job.run.info.palette)
        (directory / ROWS_FILE).unlink()
        shutil.rmtree(directory / WORST_DIR)

    return job.finish({QC_KEY: record}, write_qc_files), record


def _open_checked(run_dir: Path, out: Path, settings: GenerationSettings, qc_settings: QCSettings,
                  real: Path | None, segmenter_dir: Path | None, resume: bool, device: str | None, progress: bool,
                  qc: QualityControl | None) -> tuple[SamplingJob, QualityControl]:
    """The sampling job and the quality control it is checked by; refused before any sampling, nothing is left."""
    recorded, training_ids = run_training_data(run_dir)
    real_ds = open_dataset(real or recorded)
    same_data = real is None or Path(real).resolve() == recorded.resolve()
    job = SamplingJob.open(run_dir, out, settings, resume, device,
                           record_extra={"qc": qc_settings.to_json(), "qc_real": str(real_ds.root.resolve())})
    try:
        check_compatible(job.run.info, RunDir(job.run_dir).dataset_json, real_ds)
        if qc is None:
            qc = QualityControl.prepare(real_ds, segmenter_dir or RunDir(run_dir).qc_segmenter, qc_settings,
                                        job.run.device, training_ids if same_data else None, progress=progress)
    except UsageError:
        job.partial.close()
        if not job.partial.state["done_batches"]:
            remove_partial(out)  # refused before anything was sampled: leave nothing behind
        raise
    return job, qc


def _stop_at_cap(job: SamplingJob, qc: QualityControl, cap: int, out: Path, accept_fewer: bool) -> None:
    """The candidate cap is reached: keep the pairs so far (``accept_fewer``, at least one), else raise
    :class:`TooFewPassed` with the QC report written beside the candidates."""
    partial, num = job.partial, job.settings.num
    state = partial.state
    rate = state["passed"] / max(1, state["candidates"])
    if accept_fewer and state["kept"] > 0:
        print(f"qc: the cap of {cap} candidates is reached with {state['kept']} of {num} pairs kept "
              f"(pass rate {100 * rate:.2f}%); keeping those")
        return
    summary = (f"only {state['kept']} of {num} pairs passed quality control in {state['candidates']} "
               f"candidates (pass rate {100 * rate:.1f}%; most rejected for "
               f"{', '.join(list(state['rejected_by'])[:3]) or 'nothing'})")
    # The diagnosis matters most exactly now: the report is written beside the candidates.
    _write_qc_report(partial.dir, qc, _record(qc, state, num), state["worst"], out, job.run.info.palette)
    partial.close()  # the candidates stay for a --resume with a higher cap
    raise TooFewPassed(f"{out}: {summary}; the cap --qc-max-candidates {cap} is reached (qc.csv, qc.json "
                       f"and rejected.png in {partial.dir}). Train the run longer, loosen the thresholds, "
                       "or raise the cap and --resume", summary)


def _check_batch(job: SamplingJob, qc: QualityControl, b: int) -> int:
    """Sample batch ``b``, score it, write its passing pairs (up to ``num``), its rows and the worst
    rejected so far; the progress record is written last. Returns how many pairs it kept."""
    partial, num, bs = job.partial, job.settings.num, job.settings.batch_size
    state = partial.state
    t0 = time.perf_counter()
    batch = job.batch(b, bs, b * bs)
    images, layouts = batch.images, batch.layouts
    table = qc.score(images, layouts)
    reasons = qc.reasons(table)
    passing = [k for k, r in enumerate(reasons) if not r]
    take = passing[: num - state["kept"]]
    kept_ids: list[int | None] = [None] * len(reasons)
    for j, k in enumerate(take):
        kept_ids[k] = state["kept"] + j
    with open(partial.dir / ROWS_FILE, "ab") as fh:
        fh.write(csv_rows([b * bs + k for k in range(len(reasons))], table, reasons, kept_ids).encode())
        csv_bytes = fh.tell()
    counts = collections.Counter(state["rejected_by"])
    counts.update(r for rs in reasons for r in rs)
    worst_dir = partial.dir / WORST_DIR
    worst = _update_worst(state["worst"], b * bs, table, reasons, images, layouts, worst_dir)
    provenance = None if batch.provenance is None else [batch.provenance[k] for k in take]
    partial.write_batch(b, state["kept"], images[take], layouts[take], time.perf_counter() - t0,
                        provenance=provenance,
                        extra={"kept": state["kept"] + len(take), "passed": state["passed"] + len(passing),
                               "candidates": state["candidates"] + len(reasons),
                               "csv_bytes": csv_bytes, "worst": worst, "rejected_by": dict(counts.most_common())})
    _prune(worst_dir, worst)  # only now: the saved record no longer names the dropped files
    return len(take)


def _record(qc: QualityControl, state: dict, num: int) -> dict:
    """The QC record of a sampling run so far (the kept set's dataset.json and qc.json hold it)."""
    record = qc_record(qc, pass_rate(state["passed"], state["candidates"]), state["rejected_by"])
    record["candidates"] = state["candidates"]
    record["requested"] = num
    record["stopped_at_cap"] = state["kept"] < num
    return record


def _write_qc_report(directory: Path, qc: QualityControl, record: dict, worst: list[dict], out: Path,
                     palette: np.ndarray) -> None:
    """qc.csv, qc.json, rejected.png and qc_histograms.png from the rows and ``worst`` pairs kept in
    ``directory`` (which keeps them: an unfinished run may resume)."""
    from msgnet.io import atomic_path

    with atomic_path(directory / "qc.csv") as tmp:
        tmp.write_bytes(csv_header().encode() + (directory / ROWS_FILE).read_bytes())
    pairs = [_read_pair(directory / WORST_DIR, w["candidate"]) for w in worst]
    generated, _ = read_csv_table(directory / "qc.csv")
    write_figures_and_summary(directory, qc, generated, [p[0] for p in pairs], [p[1] for p in pairs],
                              [w["caption"] for w in worst], palette, {"generated": str(out.resolve()), **record})


def _update_worst(worst: list[dict], first_candidate: int, table, reasons, images: np.ndarray,
                  layouts: np.ndarray, directory: Path) -> list[dict]:
    """The REJECTED_SHOWN worst rejected candidates so far (most failed checks, then lowest DICE)."""
    entries = list(worst)
    for k, r in enumerate(reasons):
        if r:
            row = table.row(k)
            entries.append({"candidate": first_candidate + k, "failed": len(r), "dice": float(row["dice"]),
                            "caption": pair_caption(row, r), "_new": k})
    entries.sort(key=lambda e: severity_key(e["failed"], e["dice"], e["candidate"]))
    top = entries[:REJECTED_SHOWN]
    for e in top:
        k = e.pop("_new", None)
        if k is not None:
            for sub in ("images", "layouts"):
                (directory / sub).mkdir(exist_ok=True)
            write_files(directory, e["candidate"], images[k], layouts[k])
    return top


def _prune(directory: Path, worst: list[dict]) -> None:
    keep = {image_name(e["candidate"]) for e in worst}
    for sub in ("images", "layouts"):
        for f in (directory / sub).glob("*.png") if (directory / sub).is_dir() else []:
            if f.name not in keep:
                os.remove(f)


def _read_pair(directory: Path, candidate: int) -> tuple[np.ndarray, np.ndarray]:
    name = image_name(candidate)
    img = np.asarray(Image.open(directory / "images" / name))
    return (img if img.ndim == 3 else img[:, :, None]), np.asarray(Image.open(directory / "layouts" / name))
