"""How a benchmark result reads: the text table with protocol and verdict, and two plots
(DICE against N with error bars; the real-only learning curves that show convergence)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from msgnet.evaluation.benchmark.verdict import format_verdict, validation_score
from msgnet.evaluation.plots import SERIES_COLOURS, line_panel
from msgnet.evaluation.stats import fmt_mean_std
from msgnet.io import atomic_path


def format_benchmark(result: dict) -> str:
    """Plain-text table of a finished benchmark, the protocol beside the figures, verdict lines last."""
    lines = [
        f"U-Net segmentation benchmark (tested on the {result['tested_on']}; device {result['device_name']})",
        "protocol:     " + result["protocol_text"],
        "augmentation: " + result["augmentation_text"],
        "copy-paste:   " + result["copy_paste_text"],
        "monitor:      " + result["monitor"],
        f"seeds {result['seeds']}; real training split {result['real_train_images']} images"
        + ("" if result["synthetic_images"] is None else f"; synthetic set {result['synthetic_images']} images"),
        "DICE:         " + result["dice_definition"],
        "",
        f"{'N':>5} {'setting':<52} {'real+added':>12} {'val':>6} {'DICE':>15} {'vs real':>8} {'per-image':>15} "
        f"{'s/run':>6}",
    ]
    for entry in result["results"]:
        for s in entry["settings"]:
            r0 = s["runs"][0]
            delta = "" if s["delta_vs_real"] is None else f"{s['delta_vs_real']:+.3f}"
            lines.append(
                f"{entry['n']:>5} {s['label']:<52} {r0['train_real']:>5}+{r0['train_added']:<6} {_val(s):>6} "
                f"{fmt_mean_std(s['dice_mean'], s['dice_std']):>15} {delta:>8} "
                f"{fmt_mean_std(s['dice_per_image_mean'], s['dice_per_image_std']):>15} {s['seconds_mean']:>6.0f}")
        lines.append(f"{'':>5} {entry['steps']} steps per training"
                     + (f"; synthetic set: {entry['generator_note']}" if entry.get("generator_note") else ""))
        if "segmentation_fidelity" in entry:
            f = entry["segmentation_fidelity"]
            lines.append(f"{'':>5} segmentation fidelity (real-only U-Net on the synthetic images): "
                         f"{fmt_mean_std(f['dice_mean'], f['dice_std'])}")
    if not result.get("complete", True):
        lines += ["", "INCOMPLETE: interrupted before every training ran (`--resume` finishes it)"]
    lines += ["", "verdict (chosen on validation; test gains paired by seed, 95% t-interval):"]
    for entry in result["results"]:
        lines += ["  " + v for v in format_verdict(entry["verdict"])]
    return "\n".join(lines)


def _val(row: dict) -> str:
    score = validation_score(row)
    return "n/a" if score is None else f"{score:.3f}"


def _chosen(entry: dict) -> set[str]:
    v = entry.get("verdict", {})
    return {v[k]["setting"] for k in ("reference", "selected") if v.get(k)}


def _setting_names(result: dict) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for entry in result["results"]:
        for s in entry["settings"]:
            seen.setdefault(s["name"], s["label"])
    return list(seen.items())


def plot_dice_vs_n(result: dict, out: Path) -> Path:
    """DICE (mean ± std over seeds) against N on a log axis, one line per setting."""
    width, height = 760, 440
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), f"U-Net DICE on the {result['tested_on']} against N real training images", fill=(0, 0, 0))
    px0, py0, px1, py1 = 60, 30, width - 250, height - 40
    draw.rectangle((px0, py0, px1, py1), outline=(120, 120, 120))
    ns = sorted({e["n"] for e in result["results"]})
    vals = [(s["dice_mean"], s["dice_std"] or 0.0) for e in result["results"] for s in e["settings"]
            if not math.isnan(s["dice_mean"])]
    lo = min((m - sd for m, sd in vals), default=0.0)
    hi = max((m + sd for m, sd in vals), default=1.0)
    lo, hi = max(0.0, lo - 0.02), min(1.0, hi + 0.02) if hi > lo else lo + 0.1
    lx = [math.log10(n) for n in ns]
    xmin, xmax = (lx[0] - 0.5, lx[0] + 0.5) if len(lx) == 1 else (lx[0] - 0.1, lx[-1] + 0.1)
    fx = lambda n: px0 + (math.log10(n) - xmin) / (xmax - xmin) * (px1 - px0)  # noqa: E731
    fy = lambda v: py1 - (v - lo) / (hi - lo) * (py1 - py0)  # noqa: E731
    for n in ns:
        draw.text((fx(n) - 10, py1 + 6), str(n), fill=(60, 60, 60))
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        draw.text((8, fy(v) - 6), f"{v:.3f}", fill=(60, 60, 60))
        draw.line((px0, fy(v), px0 + 4, fy(v)), fill=(120, 120, 120))
    draw.text(((px0 + px1) // 2 - 60, height - 18), "N real images (log)", fill=(0, 0, 0))
    for k, (name, label) in enumerate(_setting_names(result)):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)] if k < len(SERIES_COLOURS) else (
            (k * 70) % 200, (k * 130) % 200, (k * 40) % 200)
        pts = []
        for e in result["results"]:
            s = next((s for s in e["settings"] if s["name"] == name), None)
            if s is None or math.isnan(s["dice_mean"]):
                continue
            x, y, sd = fx(e["n"]) + 3 * (k - 2), fy(s["dice_mean"]), s["dice_std"] or 0.0
            draw.line((x, fy(s["dice_mean"] - sd), x, fy(s["dice_mean"] + sd)), fill=colour, width=1)
            draw.line((x - 3, fy(s["dice_mean"] - sd), x + 3, fy(s["dice_mean"] - sd)), fill=colour)
            draw.line((x - 3, fy(s["dice_mean"] + sd), x + 3, fy(s["dice_mean"] + sd)), fill=colour)
            pts.append((x, y))
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((px1 + 12, py0 + 16 * k), label, fill=colour)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out


def plot_learning_curves(result: dict, out: Path, setting: str = "real") -> Path | None:
    """Monitor-split DICE against step of ``setting``'s trainings, one panel per N, one line per seed."""
    entries = [(e["n"], next((s for s in e["settings"] if s["name"] == setting), None)) for e in result["results"]]
    entries = [(n, s) for n, s in entries if s is not None]
    if not entries:
        return None
    pw, ph = 380, 220
    img = Image.new("RGB", (pw * len(entries), ph + 24), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((6, 6), f"{setting}: DICE on the {result['monitor'].split(':')[0]} during training", fill=(0, 0, 0))
    for k, (n, s) in enumerate(entries):
        lines = {f"seed {r['seed']}": [(p["step"], p["monitor_dice"]) for p in r["curve"] if "monitor_dice" in p]
                 for r in s["runs"]}
        line_panel(draw, (k * pw, 24, (k + 1) * pw, 24 + ph), f"N={n}", lines)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out


def markdown_section(result: dict, out: Path) -> list[str]:
    """The report's Markdown for a finished benchmark; writes its two plots into ``out``."""
    dice_png = plot_dice_vs_n(result, out / "augment_dice_vs_n.png")
    curves_png = plot_learning_curves(result, out / "augment_real_curves.png")
    md = ["## U-Net augmentation benchmark", ""]
    if not result.get("complete", True):
        md += ["**Incomplete**: the benchmark was interrupted before every training ran (`--resume` finishes it).", ""]
    md += [f"Protocol: {result['protocol_text']}.", "",
          f"Standard augmentation: {result['augmentation_text']}.", "",
          f"Copy-paste: {result['copy_paste_text']}.", "",
          f"DICE: {result['dice_definition']}. Tested on the {result['tested_on']}; monitor: {result['monitor']}; "
          f"seeds {result['seeds']}; device {result['device_name']}.", "",
          "Chosen on the validation split (val DICE: mean over seeds of each U-Net's best validation DICE; "
          "**bold**: the best simple baseline and the best way to use the pairs); test DICE only reports. "
          "Policies with one seed were dropped after the first round of successive halving.", "",
          "| N | setting | real + added | seeds | val DICE | test DICE | vs real only | per-image DICE | s / training |",
          "|---|---|---|---|---|---|---|---|---|"]
    for entry in result["results"]:
        chosen = _chosen(entry)
        for s in entry["settings"]:
            r0 = s["runs"][0]
            d = "baseline" if s["delta_vs_real"] is None else f"{s['delta_vs_real']:+.3f}"
            label = f"**{s['label']}**" if s["name"] in chosen else s["label"]
            md.append(f"| {entry['n']} | {label} | {r0['train_real']} + {r0['train_added']} | {len(s['runs'])} | "
                      f"{_val(s)} | {fmt_mean_std(s['dice_mean'], s['dice_std'])} | {d} | "
                      f"{fmt_mean_std(s['dice_per_image_mean'], s['dice_per_image_std'])} | {s['seconds_mean']:.0f} |")
    md += ["", "Verdict (chosen on validation; test gains paired by seed, 95% t-interval):", ""]
    for entry in result["results"]:
        md += [f"- {line}" for line in format_verdict(entry["verdict"])]
        if entry.get("generator_note"):
            md.append(f"  (synthetic set: {entry['generator_note']})")
    md += ["", f"![DICE against N]({dice_png.name})", ""]
    if curves_png is not None:
        md += ["Real-only learning curves (did the baseline converge?):", "", f"![learning curves]({curves_png.name})", ""]
    md += ["```", format_benchmark(result), "```", ""]
    return md
