"""What successive halving and early stopping saved in one finished U-Net benchmark.

Reads a ``benchmark.json`` (``msgnet run`` or ``msgnet eval augment --json``) and compares what ran
with the full grid (every setting x every seed, every step): trainings, optimiser steps, and
seconds, the seconds of a skipped training or step estimated from the same setting's measured
seconds per step (the same process, the same machine).

    python benchmarks/benchmark_cost.py runs/job/benchmark.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cost(result: dict) -> dict:
    seeds = len(result["seeds"])
    ran = {"trainings": 0, "steps": 0, "seconds": 0.0}
    full = {"trainings": 0, "steps": 0, "seconds": 0.0}
    for entry in result["results"]:
        for row in entry["settings"]:
            runs = row["runs"]
            per_step = sum(r["seconds"] for r in runs) / sum((r.get("stopped_at") or r["steps"]) for r in runs)
            planned = runs[0]["steps"]
            ran["trainings"] += len(runs)
            ran["steps"] += sum(r.get("stopped_at") or r["steps"] for r in runs)
            ran["seconds"] += sum(r["seconds"] for r in runs)
            full["trainings"] += seeds
            full["steps"] += seeds * planned
            full["seconds"] += seeds * planned * per_step
    return {"ran": ran, "full grid": full}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", type=Path)
    args = ap.parse_args()
    c = cost(json.loads(args.json.read_text()))
    ran, full = c["ran"], c["full grid"]
    print(f"trainings {ran['trainings']} of {full['trainings']} (successive halving); "
          f"steps {ran['steps']:,} of {full['steps']:,} ({ran['steps'] / full['steps']:.2f}x; early stopping "
          f"and halving); U-Net seconds {ran['seconds']:.0f} of an estimated {full['seconds']:.0f} "
          f"({ran['seconds'] / full['seconds']:.2f}x)")


if __name__ == "__main__":
    main()
