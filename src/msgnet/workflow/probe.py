"""Sampling settings chosen from the data: a small probe of guidance scales and temperatures.

``msgnet run`` does not ask the user for a guidance scale, a codes temperature or where layouts come from
(as the layout prior draws them, or with real objects' shapes): it draws a small set of
pairs with each of a few declared candidates, measures each set against the real data with quality
control (:mod:`msgnet.evaluation.qc.set_quality`: consistency *and* diversity, QC's thresholds fitted on
the validation split), and samples with the best. The probe's pairs come from their own seed and are
not reused; the test split is never read. The table of every candidate goes into ``RUN/probe.json``
(and the job's report); a rerun reuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from msgnet.evaluation.qc.checker import QualityControl
from msgnet.evaluation.qc.set_quality import SetQuality, choose, measure_set
from msgnet.io import atomic_write_json
from msgnet.sampling.engine import Engine, Progress
from msgnet.sampling.settings import GenerationSettings
from msgnet.run_dir import RunDir

PROBE_PAIRS = 96  # per candidate: enough to rank settings whose pass rates differ by a few points
PROBE_SEED_OFFSET = 7919  # the probe's pairs are not the pairs the run keeps
GUIDANCE_SCALES = (1.0, 1.5, 2.0, 3.0)  # LlamaGen and VAR sample with 1.5-4
CODES_TEMPERATURES = (1.0, 0.85)
RULE = "highest median QC DICE x min(1, diversity); ties: pass rate x min(1, diversity)"


# Where layouts come from, when the caller leaves it to the probe: as the layout prior draws them, or with
# their objects given real objects' shapes (msgnet.sampling.real_layouts).
LAYOUT_SOURCES_PROBED = ("prior", "prior-shapes")


@dataclass(frozen=True)
class Candidate:
    """One sampling setting the probe tries."""

    guidance: float
    temperature_codes: float
    layout_source: str = "prior"


def candidates_for(guidable: bool, layout_sources: Sequence[str] = ("prior",)) -> list[Candidate]:
    """The declared candidates, cheapest first (unguided before guided: :func:`choose` keeps the first of
    equals); a prior without the "no layout" input can only be probed at guidance 1."""
    scales = GUIDANCE_SCALES if guidable else (1.0,)
    return [Candidate(g, t, s) for s in layout_sources for g in scales for t in CODES_TEMPERATURES]


def probe_settings(engine: Engine, base: GenerationSettings, qc: QualityControl, candidates: Sequence[Candidate],
                   num: int = PROBE_PAIRS, progress: bool = True) -> list[dict[str, Any]]:
    """Every candidate's :class:`SetQuality`, sampling seconds and QC-passing pairs per sampling minute: the
    engine draws ``num`` pairs of ``base``'s settings under each candidate, from the probe's seed."""
    rows = []
    for cand in tqdm(candidates, desc="probe", unit="setting", disable=not progress):
        tried = engine.prepare(replace(base, seed=base.seed + PROBE_SEED_OFFSET, num=num, **vars(cand)))
        pairs = engine.collect(tried, Progress(show=False))
        seconds = pairs.seconds
        quality = measure_set(qc, pairs.images, pairs.layouts)
        rows.append({**vars(cand), "sampling_seconds": round(seconds, 2),
                     "passing_per_minute": round(60 * quality.pass_rate * num / max(seconds, 1e-9), 2),
                     **quality.to_json()})
    return rows


def chosen_row(rows: Sequence[dict[str, Any]]) -> int:
    """Index of the row :func:`msgnet.evaluation.qc.set_quality.choose` ranks first."""
    fields = SetQuality.__dataclass_fields__
    return choose([SetQuality(**{k: r[k] for k in fields}) for r in rows])


def choose_sampling(run_dir: Path, settings: GenerationSettings, qc: QualityControl, device: str | None = None,
                    num: int = PROBE_PAIRS, progress: bool = True) -> tuple[GenerationSettings, dict[str, Any]]:
    """``settings`` with the probe's guidance, codes temperature and (where ``settings.layout_source`` is None)
    layout source, and the probe's record (cached in ``run_dir/probe.json`` for the same candidates, base
    settings and probe size)."""
    engine = Engine.load(run_dir, need_layout_prior=settings.samples_layouts, device=device)
    sources = LAYOUT_SOURCES_PROBED if settings.layout_source is None else (settings.layout_source,)
    candidates = candidates_for(bool(engine.guidable), sources)
    key = {"candidates": [vars(c) for c in candidates], "pairs": num, "seed": settings.seed,
           "layout_tries": settings.layout_tries, "batch_size": settings.batch_size}
    path = RunDir(run_dir).probe_json
    record = json.loads(path.read_text()) if path.is_file() else None
    fresh = record is None or record.get("key") != key
    rows = probe_settings(engine, settings, qc, candidates, num, progress) if fresh else record["rows"]
    # Chosen again from the measured rows every time, so a record always follows today's rule.
    chosen = {"key": key, "rows": rows, "chosen": chosen_row(rows), "rule": RULE}
    if chosen != record:
        atomic_write_json(path, chosen)
    best = candidates[chosen["chosen"]]
    return replace(settings, **vars(best)), chosen
