"""Quality-controlled sampling's filter: the engine's candidates in, the passing pairs out, in candidate order.

`msgnet sample --qc` (:mod:`msgnet.workflow.checked`, a dataset writer that resumes) and
``MSGNet.sample(qc=...)`` (pairs in memory) both put the engine's batches through a :class:`QCFilter`.
Candidate ``i`` is pair ``i`` of plain sampling with the same seed (each pair has its own randomness,
:mod:`msgnet.sampling.engine`), so the kept pairs are the first ``num`` passing candidates whatever the
batch size. Every candidate, kept or not, gets a row for ``qc.csv``; the worst rejected ones are kept
aside for ``rejected.png``; a store holds both (a folder beside a resumable run, or memory).
"""

from __future__ import annotations

import collections
import itertools
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import torch
from PIL import Image

from msgnet.data.format import image_name, open_dataset, write_files
from msgnet.errors import UsageError
from msgnet.evaluation.qc.checker import QCSettings, QualityControl, pass_rate
from msgnet.evaluation.qc.outputs import csv_header, csv_rows, pair_caption, read_csv_table, severity_key
from msgnet.evaluation.qc.request import REJECTED_SHOWN, check_compatible, qc_record, write_figures_and_summary
from msgnet.io import atomic_path
from msgnet.run_dir import RunDir
from msgnet.sampling.engine import Engine, Progress, SampledBatch, SamplingRequest
from msgnet.sampling.run import run_training_data

ROWS_FILE = "qc_rows.csv"
WORST_DIR = "rejected"


class TooFewPassed(UsageError):
    """The candidate cap was reached before enough pairs passed quality control (``summary``: why)."""

    def __init__(self, message: str, summary: str):
        super().__init__(message)
        self.summary = summary


def candidate_cap(max_candidates: int | None, num: int, accept_fewer: bool) -> int:
    """The most candidates to score (default ``20 x num``); fewer than ``num`` only when fewer may be kept."""
    cap = max_candidates if max_candidates is not None else 20 * num
    if cap < num and not accept_fewer:
        raise UsageError(f"max_candidates: {cap} is fewer than `num` {num}")
    return cap


def checking_qc(run_dir: Path | str, info: Any, settings: QCSettings, device: torch.device,
                real: Path | str | None = None, segmenter_dir: Path | str | None = None,
                progress: bool = True) -> QualityControl:
    """Quality control of a run's pairs against ``real`` (default: the run's training data, its segmenter
    cached in ``RUN/qc/segmenter``); ``info``: the run's dataset record the pairs are described by."""
    recorded, training_ids = run_training_data(Path(run_dir))
    real_ds = open_dataset(real or recorded)
    same_data = real is None or Path(real).resolve() == recorded.resolve()
    check_compatible(info, RunDir(run_dir).dataset_json, real_ds)
    return QualityControl.prepare(real_ds, Path(segmenter_dir or RunDir(run_dir).qc_segmenter), settings, device,
                                  training_ids if same_data else None, progress=progress)


@dataclass
class MemoryStore:
    """Rows and pairs in memory (``MSGNet.sample(qc=...)``)."""

    text: list[str] = field(default_factory=list)
    pairs: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def add_rows(self, text: str) -> dict[str, Any]:
        """Append rows; returns what the progress record must say about them (nothing, in memory)."""
        self.text.append(text)
        return {}

    def rows(self) -> str:
        return "".join(self.text)

    def put_pair(self, candidate: int, image: np.ndarray, layout: np.ndarray) -> None:
        self.pairs[candidate] = (image.copy(), layout.copy())

    def pair(self, candidate: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pairs[candidate]

    def keep_only(self, candidates: set[int]) -> None:
        self.pairs = {k: v for k, v in self.pairs.items() if k in candidates}


class FolderStore:
    """Rows and pairs in a sampling run's ``OUT.partial/``, as far as its progress record names them:
    rows of a batch that never completed are cut off (``csv_bytes``)."""

    def __init__(self, directory: Path, csv_bytes: int):
        self.directory = directory
        for sub in ("images", "layouts"):
            (directory / WORST_DIR / sub).mkdir(parents=True, exist_ok=True)
        with open(directory / ROWS_FILE, "a+b") as fh:
            fh.truncate(csv_bytes)

    def add_rows(self, text: str) -> dict[str, Any]:
        with open(self.directory / ROWS_FILE, "ab") as fh:
            fh.write(text.encode())
            return {"csv_bytes": fh.tell()}

    def rows(self) -> str:
        return (self.directory / ROWS_FILE).read_text()

    def put_pair(self, candidate: int, image: np.ndarray, layout: np.ndarray) -> None:
        write_files(self.directory / WORST_DIR, candidate, image, layout)

    def pair(self, candidate: int) -> tuple[np.ndarray, np.ndarray]:
        name = image_name(candidate)
        img = np.asarray(Image.open(self.directory / WORST_DIR / "images" / name))
        layout = np.asarray(Image.open(self.directory / WORST_DIR / "layouts" / name))
        return (img if img.ndim == 3 else img[:, :, None]), layout

    def keep_only(self, candidates: set[int]) -> None:
        keep = {image_name(c) for c in candidates}
        for sub in ("images", "layouts"):
            for f in (self.directory / WORST_DIR / sub).glob("*.png"):
                if f.name not in keep:
                    f.unlink()

    def remove(self) -> None:
        """Leave the finished set without the working files."""
        (self.directory / ROWS_FILE).unlink()
        shutil.rmtree(self.directory / WORST_DIR)


QCStore = Union[MemoryStore, FolderStore]  # where a filter keeps every candidate's row and the worst rejected pairs


@dataclass
class QCReport:
    """What QC sampling writes beside its pairs: qc.csv, qc.json, rejected.png and qc_histograms.png."""

    qc: QualityControl
    record: dict
    worst: list[dict]
    store: QCStore
    palette: np.ndarray

    def write(self, directory: Path, out: Path) -> None:
        """The report into ``directory`` for the set ``out``; the store keeps its files (a run may resume)."""
        with atomic_path(directory / "qc.csv") as tmp:
            tmp.write_bytes((csv_header() + self.store.rows()).encode())
        pairs = [self.store.pair(w["candidate"]) for w in self.worst]
        generated, _ = read_csv_table(directory / "qc.csv")
        write_figures_and_summary(directory, self.qc, generated, [p[0] for p in pairs], [p[1] for p in pairs],
                                  [w["caption"] for w in self.worst], self.palette,
                                  {"generated": str(Path(out).resolve()), **self.record})


class QCFilter:
    """Scores candidate batches and keeps the passing pairs in candidate order until ``num`` are kept or
    ``cap`` candidates are scored; ``state``: its counts (a resumed run's progress record)."""

    def __init__(self, qc: QualityControl, num: int, cap: int, state: dict, store: QCStore):
        self.qc, self.num, self.cap, self.state, self.store = qc, num, cap, state, store
        for key, value in (("kept", 0), ("passed", 0), ("candidates", 0), ("worst", []), ("rejected_by", {})):
            state.setdefault(key, value)
        self.last_kept = 0
        self.seconds = 0.0  # the last batch's sampling and scoring time

    @property
    def finished(self) -> bool:
        return self.state["kept"] >= self.num or self.state["candidates"] >= self.cap

    def batches(self, start: int) -> Iterator[int]:
        """Batch indices from ``start`` for the engine to draw, until the filter is finished. Asked for one at a
        time, after the previous batch went through the filter: no batch is drawn in vain."""
        return itertools.takewhile(lambda _: not self.finished, itertools.count(start))

    def check(self, batch: SampledBatch) -> tuple[list[int], dict[str, Any]]:
        """Score ``batch``: the indices of its pairs to keep (up to ``num`` in all) and the state's new values.
        Its rows and worst pairs are stored now; apply the values, then call :meth:`committed`."""
        t0 = time.perf_counter()
        state = self.state
        table = self.qc.score(batch.images, batch.layouts)
        reasons = self.qc.reasons(table)
        passing = [k for k, r in enumerate(reasons) if not r]
        take = passing[: self.num - state["kept"]]
        kept_ids: list[int | None] = [None] * len(reasons)
        for j, k in enumerate(take):
            kept_ids[k] = state["kept"] + j
        ids = [batch.first + k for k in range(len(reasons))]
        update = self.store.add_rows(csv_rows(ids, table, reasons, kept_ids))
        counts = collections.Counter(state["rejected_by"])
        counts.update(r for rs in reasons for r in rs)
        update.update(kept=state["kept"] + len(take), passed=state["passed"] + len(passing),
                      candidates=state["candidates"] + len(reasons), rejected_by=dict(counts.most_common()),
                      worst=self._worst(batch, table, reasons))
        self.last_kept = len(take)
        self.seconds = batch.seconds + time.perf_counter() - t0
        return take, update

    def _worst(self, batch: SampledBatch, table: Any, reasons: list[list[str]]) -> list[dict]:
        """The REJECTED_SHOWN worst rejected candidates so far (most failed checks, then lowest DICE)."""
        entries = list(self.state["worst"])
        for k, r in enumerate(reasons):
            if r:
                row = table.row(k)
                entries.append({"candidate": batch.first + k, "failed": len(r), "dice": float(row["dice"]),
                                "caption": pair_caption(row, r), "_new": k})
        entries.sort(key=lambda e: severity_key(e["failed"], e["dice"], e["candidate"]))
        top = entries[:REJECTED_SHOWN]
        for e in top:
            k = e.pop("_new", None)
            if k is not None:
                self.store.put_pair(e["candidate"], batch.images[k], batch.layouts[k])
        return top

    def committed(self) -> None:
        """The state holds a batch's values (saved, for a run that resumes): drop pairs no longer among the worst."""
        self.store.keep_only({e["candidate"] for e in self.state["worst"]})

    def progress(self, show: bool) -> Progress:
        """The bar counts kept pairs and shows the pass rate."""
        state = self.state
        return Progress("sampling with qc", unit="pair", show=show, total=self.num, initial=state["kept"],
                        advance=lambda batch: self.last_kept,
                        postfix=lambda: {"pass_rate": f"{state['passed'] / max(1, state['candidates']):.4f}"})

    def record(self) -> dict:
        """The QC record so far (the kept set's dataset.json and qc.json hold it)."""
        state = self.state
        record = qc_record(self.qc, pass_rate(state["passed"], state["candidates"]), state["rejected_by"])
        record.update(candidates=state["candidates"], requested=self.num, stopped_at_cap=state["kept"] < self.num)
        return record

    def report(self, palette: np.ndarray) -> QCReport:
        return QCReport(self.qc, self.record(), self.state["worst"], self.store, palette)

    def shortfall(self) -> str:
        """Why the cap stopped the run, in one line."""
        state = self.state
        rate = state["passed"] / max(1, state["candidates"])
        return (f"only {state['kept']} of {self.num} pairs passed quality control in {state['candidates']} "
                f"candidates (pass rate {100 * rate:.1f}%; most rejected for "
                f"{', '.join(list(state['rejected_by'])[:3]) or 'nothing'})")


def sample_checked(engine: Engine, request: SamplingRequest, qc: QualityControl, max_candidates: int | None,
                   accept_fewer: bool, progress: bool = True) -> tuple[SampledBatch, QCReport]:
    """The first ``request.settings.num`` candidates that pass ``qc``, in memory, and their report (at most
    :func:`candidate_cap` scored; with fewer kept, :class:`TooFewPassed` unless ``accept_fewer`` and at least
    one passed)."""
    cap = candidate_cap(max_candidates, request.settings.num, accept_fewer)
    keeper = QCFilter(qc, request.settings.num, cap, {}, MemoryStore())
    kept: list[SampledBatch] = []
    for batch in engine.iter_batches(request.unbounded(), keeper.batches(0), keeper.progress(progress)):
        take, update = keeper.check(batch)
        provenance = None if batch.provenance is None else [batch.provenance[k] for k in take]
        kept.append(SampledBatch(batch.index, keeper.state["kept"], batch.layouts[take], provenance, keeper.seconds,
                                 images=batch.images[take]))
        keeper.state.update(update)
        keeper.committed()
    if keeper.state["kept"] < keeper.num and not (accept_fewer and keeper.state["kept"] > 0):
        summary = keeper.shortfall()
        raise TooFewPassed(f"qc_max_candidates: {summary}; the cap of {cap} candidates is reached. Train the run "
                           "longer, loosen the thresholds, raise the cap or accept fewer", summary)
    return SampledBatch.concat(kept), keeper.report(engine.run.info.palette)
