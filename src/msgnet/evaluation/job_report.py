"""The report of `msgnet run`: did msgnet's pairs help this dataset? First line first.

Markdown (``report.md``) and one self-contained HTML page (``report.html``): the answer with
its intervals, how the models were chosen and which weights were kept, the quality control of
the generated pairs, previews, and the U-Net benchmark against standard augmentation and
copy-paste with its plots.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from msgnet.evaluation.benchmark.report import markdown_section
from msgnet.evaluation.html_page import markdown_to_html
from msgnet.evaluation.run_report import describe_budget
from msgnet.io import atomic_write_json, atomic_write_text
from msgnet.run_dir import RunDir
from msgnet.training.selection import describe_kept

def _gain_text(g: dict | None, ref: str) -> str:
    if not g or "gain" not in g:
        return f"{ref}: not run"
    if g["low"] is None:
        return f"{g['gain']:+.3f} over {ref} (one seed, no interval)"
    return f"{g['gain']:+.3f} over {ref} (95% CI {g['low']:+.3f} to {g['high']:+.3f})"


def headline(result: dict | None, note: str | None = None) -> tuple[str, dict[str, Any]]:
    """One sentence: which way of using msgnet's pairs to adopt (chosen on validation), or not to add
    them; then what that choice measured on the test split against the best simple baseline."""
    if result is None or not result.get("results"):
        return f"msgnet's pairs were not benchmarked: {note or 'no benchmark result'}.", {"helped": None}
    entry = result["results"][-1]
    v = entry.get("verdict", {})
    sel, ref = v.get("selected"), v.get("reference")
    if sel is None or ref is None:
        return (f"msgnet's pairs were not benchmarked on {entry['n']} real images: "
                f"{note or v.get('advice', 'no generated set')}.", {"helped": None})
    g = sel.get("vs_reference")
    how = sel["policy"]["spec"] if sel.get("policy") else sel["setting"]
    helped = bool(v["adopt"] and g and g.get("low") is not None and g["low"] > 0)
    hurt = bool(g and g.get("high") is not None and g["high"] < 0)
    measured = "helped" if helped else "hurt" if hurt else "did not measurably help"
    if v["adopt"]:
        text = (f"Adopt real + standard augmentation + msgnet's pairs used as `{how}` "
                f"(chosen on the validation split over {ref['label']}): on the test split of {entry['n']} real "
                f"training images it {measured}, DICE {sel['dice_mean']:.3f}, {_gain_text(g, ref['label'])}.")
    else:
        tried = sum(1 for r in entry["settings"] if r.get("policy"))
        text = (f"Don't add these pairs: on {entry['n']} real training images none of the {tried} ways of using "
                f"them beat {ref['label']} on the validation split (best: `{how}`, test DICE "
                f"{sel['dice_mean']:.3f}, {_gain_text(g, ref['label'])}).")
    if note:
        text += f" ({note[0].upper()}{note[1:]}.)"
    return text, {"helped": helped, "verdict": measured, "adopt": v["adopt"], "policy": how,
                  "reference": ref["setting"], "vs_reference": g, "vs_augment": sel.get("vs_augment"),
                  "dice_with_pairs": sel["dice_mean"], "n": entry["n"]}


def _training_lines(run: Path) -> list[str]:
    lines = ["## How the models were chosen and trained", ""]
    preset_file = RunDir(run).preset_yaml
    if preset_file.is_file():
        preset = yaml.safe_load(preset_file.read_text()) or {}
        lines += [f"Preset `{preset.get('name')}`: {preset.get('source', '').strip()}", ""]
    for stage in ("vqvae", "layout-prior", "prior"):
        sel = RunDir(run).stage_dir(stage) / "selected.json"
        if sel.is_file():
            lines.append(f"- {sel.parent.name}: kept the weights of {describe_kept(json.loads(sel.read_text()))}")
    # What each stage bought from the budget when it started, and what it spent (RUN/run.json).
    done = RunDir(run).read_manifest().get("stages", {})
    for stage in ("vqvae", "layout-prior", "prior"):
        bought = describe_budget(done.get(stage, {}))
        if bought:
            lines.append(f"- {RunDir(run).stage_dir(stage).name}: {bought}")
    return lines + [""]


def _probe_lines(run: Path) -> list[str]:
    """How the sampling settings were chosen (``RUN/probe.json``, :mod:`msgnet.workflow.probe`), as a table."""
    path = RunDir(run).probe_json
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    rows = record["rows"]
    lines = ["## How the sampling settings were chosen", "",
             f"{len(rows)} settings tried on {rows[0]['pairs']} probe pairs each, scored against the real data by "
             f"quality control (thresholds from the validation split); chosen: {record['rule']}. Diversity is the "
             "median distance from each image to its nearest other one in the QC segmenter's feature space, "
             "relative to real validation images (1 = as varied as real data).", "",
             "| guidance | codes temperature | QC pass rate | median DICE | objects found (median) | diversity "
             "| distinct layouts | near-copies | passing pairs / sampling min |", "|" + "---|" * 9]
    for k, r in enumerate(record["rows"]):
        cells = [f"{r['guidance']:g}", f"{r['temperature_codes']:g}", f"{100 * r['pass_rate']:.1f}%",
                 f"{r['dice_median']:.3f}", f"{r['found_median']:.2f}", f"{r['diversity']:.2f}",
                 f"{100 * r['distinct_layouts']:.0f}%", f"{100 * r['near_copy_rate']:.1f}%",
                 f"{r['passing_per_minute']:.1f}"]
        if k == record["chosen"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_job_report(out: Path, data: Path, run: Path, result: dict | None, generated: Path | None,
                     note: str | None = None) -> dict[str, Any]:
    """Write ``out/report.md``, ``out/report.html`` and ``out/report.json``; returns the JSON summary."""
    from msgnet.evaluation.qc.report import find_qc, qc_section

    out.mkdir(parents=True, exist_ok=True)
    line, figures = headline(result, note)
    md = [f"**{line}**", "", "# msgnet run report", "", f"- real data: `{data}`", f"- run: `{run}`",
          f"- generated pairs: `{generated}`" + (f" ({note})" if note else "") if generated
          else f"- generated pairs: none ({note})", ""]
    md += _training_lines(run)
    md += _probe_lines(run)
    summary: dict[str, Any] = {"headline": line, **figures}
    if generated is not None:
        qc_dir = find_qc(generated)
        if qc_dir is not None:
            summary["qc"], qc_lines = qc_section(qc_dir, out)
            md += qc_lines
        if (generated / "preview.png").is_file():
            shutil.copy2(generated / "preview.png", out / "generated_preview.png")
            md += ["Generated pairs (each image followed by its layout):", "",
                   "![generated](generated_preview.png)", ""]
    if result is not None:
        md += markdown_section(result, out)
    text = "\n".join(md) + "\n"
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.html", markdown_to_html(text, out, "msgnet run report"))
    atomic_write_json(out / "report.json", summary)
    return summary
