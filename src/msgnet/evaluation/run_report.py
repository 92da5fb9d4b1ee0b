"""A short report of one trained run and its samples: what the main job leaves behind.

``report.md`` (readable without the terminal) and ``report.json`` in the run directory:
per stage its steps, wall time, last training and validation metrics and a curve plot;
the generated samples' preview grid, sampling speed, and their rule coherency when the
training data declares a rule.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from msgnet.errors import UsageError
from msgnet.io import atomic_write_json, atomic_write_text
from msgnet.locks import writing
from msgnet.run_dir import RunDir, trained_stages


def _last_rows(csv_path: Path) -> dict[str, dict[str, str]]:
    last: dict[str, dict[str, str]] = {}
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            last[row.get("split") or "train"] = row
    return last


def _clean(row: dict[str, str]) -> dict[str, float]:
    out = {}
    for k, v in row.items():
        if k in ("split",) or v in ("", None):
            continue
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def describe_budget(entry: dict) -> str | None:
    """What a stage bought from the run's training budget (its entry in RUN/run.json), in words; None
    for a stage whose steps were fixed (msgnet.workflow.budget)."""
    if "steps_bought" not in entry:
        return None
    def span(seconds: float) -> str:
        return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"

    text = (f"bought {entry['steps_bought']:,} steps at {entry['step_seconds']:.3g} s/step (timed as it started) "
            f"for its share of the budget, {span(entry['budget_seconds'])}")
    if "spent_seconds" in entry:
        text += f"; spent {span(entry['spent_seconds'])}"
    return text


def stage_summary(run: Path, stage: str, title: str) -> dict[str, Any] | None:
    from msgnet.evaluation.plots import plot_metrics

    folder = RunDir(run).stage_dir(stage)
    csv_path = folder / "metrics.csv"
    if not csv_path.is_file():
        return None
    bought = RunDir(run).read_manifest().get("stages", {}).get(stage, {})  # the manifest names it as trained
    stage = folder.name  # the report names a stage by its folder
    last = _last_rows(csv_path)
    plot = plot_metrics(csv_path, RunDir(run).report / f"{stage}_curves.png", title)
    selected = folder / "selected.json"
    return {
        "budget": describe_budget(bought) if isinstance(bought, dict) else None,
        "selected": json.loads(selected.read_text()) if selected.is_file() else None,
        "stage": stage,
        "title": title,
        "train": _clean(last.get("train", {})),
        "val": _clean(last.get("val", {})),
        "epoch_end": _clean(last.get("epoch", {})),
        "curves": str(plot.relative_to(run)) if plot else None,
    }


def samples_summary(run: Path, samples: Path) -> dict[str, Any]:
    from msgnet.data.format import open_dataset
    from msgnet.evaluation.coherency import check_coherency
    from msgnet.evaluation.qc.report import find_qc, qc_section

    ds = open_dataset(samples)
    src = ds.info.source
    n = sum(len(v) for v in ds.info.splits.values())
    seconds = float(src.get("sampling_seconds", 0.0))
    out: dict[str, Any] = {"path": str(samples), "num": n, "sampling_seconds": seconds,
                           "samples_per_s": n / seconds if seconds > 0 else None,
                           "sampler": src.get("settings", {}).get("sampler")}
    if (samples / "preview.png").is_file():
        RunDir(run).report.mkdir(parents=True, exist_ok=True)
        shutil.copy2(samples / "preview.png", RunDir(run).report / "samples_preview.png")
        out["preview"] = "report/samples_preview.png"
    qc_dir = find_qc(samples)
    if qc_dir is not None:
        out["qc"], out["qc_markdown"] = qc_section(qc_dir, RunDir(run).report, "report")
    if ds.info.rule:
        coh = check_coherency(ds, progress=False)
        out["rule"] = ds.info.rule.get("description", ds.info.rule)
        out["violating"] = coh.num_violating
        out["checked"] = coh.num_images
        out["by_rule"] = coh.by_rule
    return out


def _fmt_metrics(m: dict[str, float], keys: tuple[str, ...] = ()) -> str:
    skip = {"epoch", "time_s", "lr"}
    items = [(k, v) for k, v in m.items() if k not in skip and (not keys or k in keys)]
    return ", ".join(f"{k} {v:.4g}" for k, v in items) or "-"


def write_run_report(run: Path | str, samples: Path | str | None, timings: dict[str, float]) -> Path:
    """Write RUN/report.md and RUN/report.json (and RUN/report/'s pictures) under the run's lock: one
    writer per run; returns the Markdown path."""
    run = Path(run)
    if not run.is_dir():
        raise UsageError(f"{run}: no such run directory")
    with writing(run):
        return _write_run_report(run, Path(samples) if samples is not None else None, timings)


def _write_run_report(run: Path, samples: Path | None, timings: dict[str, float]) -> Path:
    method = RunDir(run).method()
    stages = [s for s in (stage_summary(run, st.name, st.title) for st in trained_stages(method)) if s]
    if not stages:
        raise UsageError(f"{run}: no stage has a metrics.csv (nothing trained yet)")
    sample_info = samples_summary(run, samples) if samples else None
    lines = [f"# msgnet run report: `{run}`", ""]
    if timings:
        total = sum(timings.values())
        lines += ["## Timings", "", "| step | seconds | minutes |", "|---|---|---|"]
        lines += [f"| {k} | {v:.0f} | {v / 60:.1f} |" for k, v in timings.items()]
        lines += [f"| **total** | {total:.0f} | {total / 60:.1f} |", ""]
    lines += ["## Training", ""]
    for s in stages:
        t = s["train"]
        lines += [
            f"### {s['title']} (`{s['stage']}/`)", "",
            f"- steps: {int(t.get('step', 0))}, wall time {t.get('time_s', 0) / 60:.1f} min",
            f"- last training metrics: {_fmt_metrics(t)}",
            f"- last validation metrics: {_fmt_metrics(s['val'])}",
        ]
        if s["epoch_end"]:
            lines.append(f"- last end-of-epoch metrics: {_fmt_metrics(s['epoch_end'])}")
        if s.get("budget"):
            lines.append(f"- budget: {s['budget']}")
        if s.get("selected"):
            from msgnet.training.selection import describe_kept

            lines.append(f"- kept weights: {describe_kept(s['selected'])}")
        if s["curves"]:
            lines += ["", f"![{s['stage']} curves]({s['curves']})"]
        lines.append("")
    if sample_info:
        lines += ["## Samples", "",
                  f"{sample_info['num']} generated image + layout pairs in `{sample_info['path']}` "
                  f"(sampler: {sample_info['sampler']}, "
                  + (f"{sample_info['samples_per_s']:.2f} samples/s" if sample_info["samples_per_s"] else "speed n/a")
                  + ").", ""]
        if "rule" in sample_info:
            lines += [f"Rule of the training data: {sample_info['rule']}. Violating samples: "
                      f"{sample_info['violating']} of {sample_info['checked']} ({sample_info['by_rule']}).", ""]
        if sample_info.get("preview"):
            lines += ["Each image is followed by its generated layout overlaid on it:", "",
                      f"![samples]({sample_info['preview']})", ""]
        lines += ["#" + line if line.startswith("## ") else line for line in sample_info.pop("qc_markdown", [])]
    md = run / "report.md"
    atomic_write_text(md, "\n".join(lines))
    atomic_write_json(run / "report.json", {"timings": timings, "stages": stages, "samples": sample_info})
    return md
