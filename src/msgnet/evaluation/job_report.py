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
from msgnet.run_dir import RunDir, trained_stages
from msgnet.training.selection import describe_kept

def _gain_text(g: dict | None, ref: str) -> str:
    if not g or "gain" not in g:
        return f"{ref}: not run"
    if g["low"] is None:
        return f"{g['gain']:+.3f} over {ref} (one seed, no interval)"
    return f"{g['gain']:+.3f} over {ref} (95% CI {g['low']:+.3f} to {g['high']:+.3f})"


def _val_gain_text(sel: dict) -> str:
    val = sel.get("val_vs_reference") or {}
    if val.get("low") is None:
        return "no interval"
    return f"{val['gain']:+.3f}, 95% CI {val['low']:+.3f} to {val['high']:+.3f} over {len(val['seeds'])} seeds"


def _why_not(v: dict, entry: dict, ref: str, how: str, test: str) -> str:
    """Why the pairs are not adopted, in the verdict's terms (a verdict written before its status: the old words)."""
    status, val = v.get("status"), v["selected"].get("val_vs_reference") or {}
    tried = sum(1 for r in entry["settings"] if r.get("policy"))
    if status == "needs-seeds":
        return (f"{len(val.get('seeds', []))} seed(s) on {entry['n']} real training images cannot tell whether `{how}` "
                f"beats {ref} (validation {val.get('gain', float('nan')):+.3f}, no interval); the verdict needs at "
                f"least {v.get('min_seeds', 3)} seeds ({test}).")
    if status == "cannot-tell" and val.get("gain", 0) > 0:
        need = val.get("seeds_needed")
        return (f"on {entry['n']} real training images the best of the {tried} ways of using them, `{how}`, was ahead "
                f"of {ref} on the validation split by less than the seed-to-seed noise "
                f"({_val_gain_text(v['selected'])}); the data cannot tell them apart"
                + (f", about {need} seeds would resolve a difference of this size" if need else "") + f" ({test}).")
    return (f"on {entry['n']} real training images none of the {tried} ways of using them beat {ref} on the "
            f"validation split (best: `{how}`, {test}).")


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
    test = f"test DICE {sel['dice_mean']:.3f}, {_gain_text(g, ref['label'])}"
    if v["adopt"]:
        pasted = (sel.get("policy") or {}).get("copy_paste")
        base = "real + standard augmentation + " + ("copy-paste + " if pasted else "")
        text = (f"Adopt {base}msgnet's pairs used as `{how}`: on the validation split it beat "
                f"{ref['label']} beyond the seed-to-seed noise ({_val_gain_text(sel)}); on the test split of "
                f"{entry['n']} real training images it {measured}, {test}.")
    else:
        text = f"Don't add these pairs{' yet' if v.get('status') == 'needs-seeds' else ''}: " + _why_not(
            v, entry, ref["label"], how, test)
    if note:
        text += f" ({note[0].upper()}{note[1:]}.)"
    return text, {"helped": helped, "verdict": measured, "adopt": v["adopt"], "status": v.get("status"), "policy": how,
                  "reference": ref["setting"], "vs_reference": g, "vs_augment": sel.get("vs_augment"),
                  "validation_vs_reference": sel.get("val_vs_reference"),
                  "dice_with_pairs": sel["dice_mean"], "n": entry["n"]}


def _training_lines(run: Path) -> list[str]:
    lines = ["## How the models were chosen and trained", ""]
    preset_file = RunDir(run).preset_yaml
    if preset_file.is_file():
        preset = yaml.safe_load(preset_file.read_text()) or {}
        lines += [f"Preset `{preset.get('name')}`: {preset.get('source', '').strip()}", ""]
    for stage in (s.name for s in trained_stages()):
        sel = RunDir(run).stage_dir(stage) / "selected.json"
        if sel.is_file():
            lines.append(f"- {sel.parent.name}: kept the weights of {describe_kept(json.loads(sel.read_text()))}")
    # What each stage bought from the budget when it started, and what it spent (RUN/run.json).
    done = RunDir(run).read_manifest().get("stages", {})
    for stage in (s.name for s in trained_stages()):
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
             "| layouts | guidance | codes temperature | QC pass rate | median DICE | objects found (median) "
             "| diversity | distinct layouts | near-copies | passing pairs / sampling min |", "|" + "---|" * 10]
    for k, r in enumerate(record["rows"]):
        cells = [r.get("layout_source", "prior"), f"{r['guidance']:g}", f"{r['temperature_codes']:g}",
                 f"{100 * r['pass_rate']:.1f}%",
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
