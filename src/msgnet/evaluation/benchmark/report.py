"""How a benchmark result reads: the text table with protocol and verdict, and two plots
(DICE against N with error bars; the real-only learning curves that show convergence)."""

from __future__ import annotations

import math
from pathlib import Path


from msgnet.evaluation.benchmark.verdict import format_verdict, validation_score
from msgnet.evaluation.plots import line_panel, new_figure, save_figure
from msgnet.evaluation.stats import fmt_mean_std


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
    lines += ["", "verdict (chosen on validation; adopted only where the validation gain paired by seed has its "
              "95% t-interval above 0, over at least 3 seeds; test gains paired by seed, 95% t-interval):"]
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
    fig = new_figure(760, 440, f"U-Net DICE on the {result['tested_on']} against N real training images")
    ax = fig.subplots()
    ns = sorted({e["n"] for e in result["results"]})
    for name, label in _setting_names(result):
        points = [(e["n"], s["dice_mean"], s["dice_std"] or 0.0) for e in result["results"]
                  for s in e["settings"] if s["name"] == name and not math.isnan(s["dice_mean"])]
        if points:
            x, y, sd = zip(*points)
            ax.errorbar(x, y, yerr=sd, marker="o", markersize=4, capsize=3, linewidth=1.5, label=label)
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("N real training images (log scale)", fontsize=9)
    ax.set_ylabel("test DICE (mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return save_figure(fig, out)


def plot_learning_curves(result: dict, out: Path, setting: str = "real") -> Path | None:
    """Monitor-split DICE against step of ``setting``'s trainings, one panel per N, one line per seed."""
    entries = [(e["n"], next((s for s in e["settings"] if s["name"] == setting), None)) for e in result["results"]]
    entries = [(n, s) for n, s in entries if s is not None]
    if not entries:
        return None
    monitor = result["monitor"].split(":")[0]
    fig = new_figure(max(380 * len(entries), 560), 260, f"{setting}: DICE on the {monitor} during training")
    axes = fig.subplots(1, len(entries), squeeze=False)[0]
    for ax, (n, s) in zip(axes, entries):
        lines = {f"seed {r['seed']}": [(p["step"], p["monitor_dice"]) for p in r["curve"] if "monitor_dice" in p]
                 for r in s["runs"]}
        line_panel(ax, f"N={n}", lines, ylabel="DICE")
    return save_figure(fig, out)


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
    md += ["", "Verdict (chosen on validation; adopted only where the validation gain paired by seed has its 95% "
           "t-interval above 0, over at least 3 seeds; test gains paired by seed, 95% t-interval):", ""]
    for entry in result["results"]:
        md += [f"- {line}" for line in format_verdict(entry["verdict"])]
        if entry.get("generator_note"):
            md.append(f"  (synthetic set: {entry['generator_note']})")
    md += ["", f"![DICE against N]({dice_png.name})", ""]
    if curves_png is not None:
        md += ["Real-only learning curves (did the baseline converge?):", "", f"![learning curves]({curves_png.name})", ""]
    md += ["```", format_benchmark(result), "```", ""]
    return md
