"""How long to train: the generator's figures and the verdict against the training budget, as one plot.

    .venv/bin/python scripts/budget_curve.py --run 12=runs/job --run 30=runs/job30 [--run 60=runs/job60]
        --out docs/images/budget_curve_cpu.png

Each RUN is a main job (`bash scripts/main.sh` with RUN and BUDGET set) with ``scripts/adherence.py --run
RUN --guidance 1`` run on it: the left panel draws the annotation fidelity with the run's own layouts and
the QC pass rate of that row (300 pairs, seed 5), the right one the benchmark's verdict where the run has
one (selected policy minus the best simple baseline, test DICE, with its paired 95% interval over the
U-Net seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from msgnet.evaluation.plots import line_panel, new_figure, save_figure

SETTING = "prior-g1-t1-s5"  # the adherence row every budget is compared on


def _point(run: Path) -> dict[str, float]:
    rows = [r for r in json.loads((run / "adherence.json").read_text()) if r["setting"] == SETTING]
    if not rows:
        raise SystemExit(f"{run / 'adherence.json'}: no row {SETTING} "
                         f"(run scripts/adherence.py --run {run} --guidance 1)")
    point = {"fidelity": 100 * rows[-1]["fidelity"], "qc_pass": 100 * rows[-1]["pass_rate"]}
    if (run / "benchmark.json").is_file():  # a run whose benchmark was not run draws no verdict
        verdict = json.loads((run / "benchmark.json").read_text())["results"][0]["verdict"]["selected"]
        point.update({k: verdict["vs_reference"][k] for k in ("gain", "low", "high")})
    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="MINUTES=RUN")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    points = {float(m): _point(Path(r)) for m, r in (spec.split("=", 1) for spec in args.run)}
    fig = new_figure(900, 360, "Multi-MNIST N = 1,000, 2-core CPU: what a longer training budget buys")
    left, right = fig.subplots(1, 2)
    line_panel(left, "the generator", {"fidelity, own layouts (%)": [(m, p["fidelity"]) for m, p in points.items()],
                                       "QC pass (%)": [(m, p["qc_pass"]) for m, p in points.items()]},
               "% of objects / pairs", xlabel="training budget (minutes)")
    minutes = sorted(m for m, p in points.items() if "gain" in p)
    gains = [points[m]["gain"] for m in minutes]
    errors = [[g - points[m]["low"] for m, g in zip(minutes, gains)],
              [points[m]["high"] - g for m, g in zip(minutes, gains)]]
    right.errorbar(minutes, gains, yerr=errors, marker="o", capsize=4, linewidth=1.5)
    right.axhline(0.0, color="grey", linewidth=1)
    right.axhline(0.02, color="green", linewidth=1, linestyle="--", label="goal: +0.02")
    right.set_title("verdict: selected policy − aug. + copy-paste\n(test DICE, paired 95% CI)", fontsize=9)
    right.set_xlabel("training budget (minutes)", fontsize=8)
    right.tick_params(labelsize=7)
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
