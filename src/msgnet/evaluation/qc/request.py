"""`msgnet qc` as a library call: score a generated set against its real data, keep what passes.

Everything that can be refused is refused before the segmenter trains: unreadable or
incompatible sets, an output that exists. The kept pairs form a valid dataset whose
``dataset.json`` records the QC settings, thresholds and pass rate (95% interval).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from msgnet.data.format import Dataset, DatasetInfo, DatasetWriter, open_dataset
from msgnet.data.provenance import GENERATOR_TRAINING_KEY, generator_training
from msgnet.errors import UsageError
from msgnet.io import check_can_write, ensure_output_apart, is_msgnet_dataset, paths_as_fields
from msgnet.evaluation.stats import fmt_rate
from msgnet.evaluation.qc.checker import QCSettings, QualityControl, pass_rate
from msgnet.evaluation.qc.outputs import (csv_header, csv_rows, histograms_png, pair_caption, rejected_grid,
                                          report_dir_beside, severity_order, write_summary)
from msgnet.evaluation.qc.scores import ScoreTable

logger = logging.getLogger(__name__)

QC_KEY = "qc"
REJECTED_SHOWN = 16
SCORE_BATCH = 1024
REPORT_FILES = ("qc.csv", "qc.json", "rejected.png", "qc_histograms.png")


@dataclass(frozen=True)
class QCRequest:
    """What `msgnet qc` was asked to do. Paths may be ``str`` or ``Path``. ``out``: the kept pairs as a
    dataset, with the report; without it, the report alone goes to ``report`` (default ``DATA-qc/``
    beside ``data``). ``segmenter``: where the consistency segmenter is cached (default: the generator's
    ``RUN/qc/segmenter``, else the real set's ``.cache``). No output may lie inside an input."""

    data: Path
    real: Path
    out: Path | None = None
    segmenter: Path | None = None
    settings: QCSettings = field(default_factory=QCSettings)
    device: str | None = None
    progress: bool = True
    report: Path | None = None

    def __post_init__(self) -> None:
        paths_as_fields(self, ("data", "real"), ("out", "segmenter", "report"))
        if not isinstance(self.settings, QCSettings):
            raise UsageError(f"settings: a QCSettings, not {type(self.settings).__name__}")
        if self.out is not None and self.report is not None:
            raise UsageError("report: only without out (the kept set holds its own report)")
        if self.out is not None:
            ensure_output_apart(self.out, self.data, self.real, self.segmenter, field="out")
        else:
            ensure_output_apart(self.report_dir, self.data, self.real, self.segmenter, field="report")
        if self.segmenter is not None:
            ensure_output_apart(self.segmenter, self.data, field="segmenter")

    @property
    def report_dir(self) -> Path:
        """Where the report files go: ``out``, else ``report``, else ``DATA-qc/`` beside the data."""
        return self.out or self.report or report_dir_beside(self.data)


def check_report_dir(path: Path) -> None:
    """A report-only folder is new, empty, or an earlier QC report (replaced); nothing else is written over."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UsageError(f"report: {path} is a file, not a folder")
        foreign = sorted(p.name for p in path.iterdir() if p.name not in REPORT_FILES)
        if is_msgnet_dataset(path) or foreign:
            raise UsageError(f"report: {path} holds more than a QC report ({foreign[0] if foreign else 'a dataset'}); "
                             "give out, or another report folder")
    check_can_write(path)


def check_compatible(g: DatasetInfo, where: Path, real: Dataset) -> None:
    """Refuse generated pairs (described by ``g``, read from ``where``) that cannot be compared with ``real``."""
    r = real.info
    if g.image_size != r.image_size or g.channels != r.channels:
        raise UsageError(f"{where}: images are {g.image_size[1]}x{g.image_size[0]}x{g.channels}, the real set's "
                         f"{r.image_size[1]}x{r.image_size[0]}x{r.channels}")
    unknown = sorted({c.id for c in g.classes} - {c.id for c in r.classes})
    if unknown:
        raise UsageError(f"{where}: class id {unknown[0]} is not a class of the real set {real.root}")


def default_segmenter_dir(gen: Dataset, real: Dataset) -> Path:
    """Beside the generator's run when the set names one (``RUN/qc/segmenter``), else in the real set's cache."""
    run = gen.info.source.get("run") if isinstance(gen.info.source, dict) else None
    if run and Path(run).is_dir():
        from msgnet.run_dir import RunDir

        return RunDir(run).qc_segmenter
    return real.root / ".cache" / "qc-segmenter"


def reference_ids(gen: Dataset, real: Dataset) -> list[int] | None:
    """The generator's own training images when the set records them and they are in ``real``."""
    record = generator_training(gen.info)
    if not record or record.get("ids") is None:
        return None
    if Path(str(record.get("dataset"))).resolve() != real.root.resolve():
        return None
    return [int(i) for i in record["ids"]]


def qc_record(qc: QualityControl, rate: dict[str, Any], reasons: dict[str, int]) -> dict[str, Any]:
    """What a kept set's dataset.json says about its quality control."""
    return {**qc.describe(), "pass_rate": rate, "rejected_by": reasons}


def count_reasons(reasons: list[list[str]]) -> dict[str, int]:
    return dict(collections.Counter(r for rs in reasons for r in rs).most_common())


def run_qc(req: QCRequest) -> dict[str, Any]:
    """Score every pair of ``req.data``; write the report and, with ``req.out``, the kept set."""
    from msgnet.device import choose_device

    gen, real = open_dataset(req.data), open_dataset(req.real)
    check_compatible(gen.info, gen.root / "dataset.json", real)
    if req.out is not None and req.out.exists():
        raise UsageError(f"out {req.out}: already exists (choose another `out` or remove it)")
    if req.out is None:
        check_report_dir(req.report_dir)
    segmenter_dir = req.segmenter or default_segmenter_dir(gen, real)
    if segmenter_dir.exists() and not segmenter_dir.is_dir():  # before the segmenter trains, not after
        raise UsageError(f"segmenter {segmenter_dir}: a file, not a folder (where the QC segmenter is kept)")
    check_can_write(segmenter_dir)
    device = choose_device(req.device)
    qc = QualityControl.prepare(real, segmenter_dir, req.settings, device,
                                reference_ids(gen, real), progress=req.progress)
    logger.info(qc.describe_text())
    splits = [s for s, ids in gen.info.splits.items() if ids]
    tables, ids, split_of, arrays = [], [], [], []
    for split in splits:
        images, layouts = gen.load_split(split, cache=False)  # nothing is written into the scored set
        for start in tqdm(range(0, len(images), SCORE_BATCH), desc=f"qc {split}", unit="batch",
                          disable=not req.progress, leave=False):
            tables.append(qc.score(images[start : start + SCORE_BATCH], layouts[start : start + SCORE_BATCH]))
        ids += gen.ids(split)
        split_of += [split] * len(images)
        arrays.append((images, layouts))
    table = ScoreTable.concat(tables)
    images = np.concatenate([a[0] for a in arrays])
    layouts = np.concatenate([a[1] for a in arrays])
    reasons = qc.reasons(table)
    kept = [i for i, r in enumerate(reasons) if not r]
    rate = pass_rate(len(kept), len(reasons))
    summary = {"generated": str(gen.root.resolve()), **qc_record(qc, rate, count_reasons(reasons))}
    kept_ids: list[int | None] = [None] * len(reasons)
    for new_id, k in enumerate(kept):
        kept_ids[k] = new_id
    report_dir = req.report_dir
    writer = None
    if req.out is not None:
        info = gen.info
        source = {k: v for k, v in info.source.items() if k != GENERATOR_TRAINING_KEY}
        source["qc_of"] = str(gen.root.resolve())
        source[QC_KEY] = qc_record(qc, rate, count_reasons(reasons))
        if GENERATOR_TRAINING_KEY in info.source:
            source[GENERATOR_TRAINING_KEY] = info.source[GENERATOR_TRAINING_KEY]  # last: its id list is long
        info.source, info.splits = source, {}
        if not kept:  # no dataset to write, but the diagnosis is wanted exactly now: the reports alone
            write_reports(req.out, qc, ids, table, reasons, kept_ids, images, layouts, real.info.palette, summary)
            raise UsageError(f"{gen.root}: no pair passed quality control ({count_reasons(reasons)}); "
                             f"{req.out} holds the report only (qc.csv, qc.json, rejected.png)")
        writer = DatasetWriter(req.out, info)
        for k in kept:
            writer.add(split_of[k], images[k], layouts[k])
        report_dir = writer.tmp
    try:
        write_reports(report_dir, qc, ids, table, reasons, kept_ids, images, layouts, real.info.palette, summary)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    summary["report_dir"] = str(req.report_dir)
    return summary


def write_reports(directory: Path, qc: QualityControl, ids: list[int], table: ScoreTable, reasons: list[list[str]],
                  kept_ids: list[int | None], images: np.ndarray, layouts: np.ndarray, palette: np.ndarray,
                  summary: dict[str, Any]) -> None:
    """qc.csv, qc.json, rejected.png and qc_histograms.png into ``directory``."""
    from msgnet.io import atomic_write_text

    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "qc.csv", csv_header() + csv_rows(ids, table, reasons, kept_ids))
    worst = severity_order(table, reasons)[:REJECTED_SHOWN]
    write_figures_and_summary(directory, qc, table, [images[i] for i in worst], [layouts[i] for i in worst],
                              [pair_caption(table.row(int(i)), reasons[int(i)]) for i in worst], palette, summary)


def write_figures_and_summary(directory: Path, qc: QualityControl, generated: ScoreTable, worst_images: list,
                              worst_layouts: list, captions: list, palette: np.ndarray,
                              summary: dict[str, Any]) -> None:
    """rejected.png (the worst rejected pairs given), qc_histograms.png and qc.json: shared by `msgnet qc`
    and `sample --qc`, whatever way each holds its scores."""
    rejected_grid(worst_images, worst_layouts, captions, palette, directory / "rejected.png")
    histograms_png(qc.real_scores, generated, qc.thresholds.to_json(), directory / "qc_histograms.png")
    write_summary(directory / "qc.json", summary)


def format_summary(summary: dict[str, Any]) -> str:
    rate = summary["pass_rate"]
    lo, hi = rate["ci95"]
    lines = [f"qc: {rate['kept']} of {rate['scored']} pairs pass: {fmt_rate(rate['rate'], lo, hi)}"]
    for reason, count in summary["rejected_by"].items():
        lines.append(f"  {reason:<22} {count:>7} pairs  {100 * count / max(1, rate['scored']):6.2f}%")
    return "\n".join(lines)
