"""Do the images follow their layouts? One row of the adherence ablation per sampling setting.

    .venv/bin/python scripts/adherence.py --run RUN [--num 300] [--seed 5] [--guidance 1 2 3]
        [--temperature-codes 1.0] [--top-p-codes P] [--layout-source prior|prior-shapes|real] [--json OUT.json]

For every guidance scale given, samples ``--num`` pairs from RUN (``msgnet sample`` with the same
settings writes the same pairs, into RUN/adherence/<setting>/), then measures:

- annotation fidelity: the in-project digit classifier reads the annotated digit in each annotated
  object's crop (``msgnet eval fidelity``; Multi-MNIST only), with its Wilson 95% interval;
- QC against the run's training data (thresholds from the validation split): pass rate, median
  pooled DICE and objects found, layouts obeying the dataset's rule, near-copy flags (beside the rate
  on the unseen real test split), diversity relative to real validation images, distinct layouts;
- QC-passing pairs per sampling minute on this machine.

Prints one Markdown row per setting and appends the figures to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        flags = out.split("Flags:", 1)[1] if "Flags:" in out else ""
        return f"{model}, {'AVX512-BF16' if 'avx512_bf16' in flags else 'no native bf16 (AVX2)'}"
    except (OSError, StopIteration, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"


def _row(run: Path, settings, qc, real_test_near_copy: float) -> dict:
    from msgnet.data.format import open_dataset
    from msgnet.evaluation.digit_classifier import get_classifier
    from msgnet.evaluation.fidelity import annotation_fidelity
    from msgnet.evaluation.qc.set_quality import measure_set
    from msgnet.sampling.pipeline import generate

    name = (f"{settings.layout_source}-g{settings.guidance:g}-t{settings.temperature_codes:g}"
            + (f"-p{settings.top_p_codes:g}" if settings.top_p_codes else "") + f"-s{settings.seed}")
    out = run / "adherence" / name
    if not out.is_dir():
        generate(run, out, settings, resume=out.with_name(out.name + ".partial").is_dir(), progress=False)
    record = json.loads((out / "dataset.json").read_text())["source"]
    seconds = float(record["sampling_seconds"])
    dataset = open_dataset(out)
    images, layouts = dataset.load_split("train")
    quality = measure_set(qc, images, layouts)
    fidelity = annotation_fidelity(dataset, get_classifier(None, progress=False)[0], progress=False)
    return {"setting": name, "settings": record["settings"], "sampling_seconds": seconds,
            "fidelity": fidelity["agreement"], "fidelity_ci95": fidelity["ci95"], "objects": fidelity["objects"],
            "passing_per_minute": 60 * quality.pass_rate * len(images) / max(seconds, 1e-9),
            "real_test_near_copy_rate": real_test_near_copy, **quality.to_json()}


def _markdown(r: dict) -> str:
    lo, hi = r["fidelity_ci95"]
    rule = "n/a" if r["rule_kept"] is None else f"{100 * r['rule_kept']:.0f}%"
    return (f"| {r['setting']} | {100 * r['fidelity']:.1f}% ({100 * lo:.1f}–{100 * hi:.1f}) | "
            f"{100 * r['pass_rate']:.1f}% | {r['dice_median']:.3f} | {rule} | {r['diversity']:.2f} | "
            f"{100 * r['distinct_layouts']:.0f}% | {100 * r['near_copy_rate']:.1f}% "
            f"(real {100 * r['real_test_near_copy_rate']:.1f}%) | {r['passing_per_minute']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--num", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0])
    parser.add_argument("--temperature-codes", type=float, default=1.0)
    parser.add_argument("--top-p-codes", type=float, default=None)
    parser.add_argument("--layout-source", default="prior", choices=["prior", "prior-shapes", "real"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from msgnet.evaluation.qc.checker import QCSettings
    from msgnet.evaluation.qc.set_quality import near_copy_share
    from msgnet.workflow.checked import prepare_run_qc
    from msgnet.sampling.pipeline import GenerationSettings

    qc = prepare_run_qc(args.run, QCSettings(), torch.device("cpu"), progress=False)
    test_images, test_layouts = qc.real.load_split("test")
    real_test_near_copy = near_copy_share(qc, qc.reasons(qc.score(test_images, test_layouts)))
    print(f"# {args.run}, {args.num} pairs, seed {args.seed}; CPU: {_cpu()}, torch threads {torch.get_num_threads()}")
    print("| setting | annotation fidelity (95% CI) | QC pass | median DICE | rule kept | diversity | "
          "distinct layouts | near-copies | QC-passing pairs / sampling min |")
    print("|" + "---|" * 9)
    rows = []
    for guidance in args.guidance:
        settings = GenerationSettings(num=args.num, seed=args.seed, guidance=guidance,
                                      temperature_codes=args.temperature_codes, top_p_codes=args.top_p_codes,
                                      layout_source=args.layout_source, batch_size=args.batch_size)
        row = _row(args.run, settings, qc, real_test_near_copy)
        row.update(run=str(args.run), cpu=_cpu(), measured=time.strftime("%Y-%m-%d"))
        rows.append(row)
        print(_markdown(row), flush=True)
    if args.json is not None:
        previous = json.loads(args.json.read_text()) if args.json.is_file() else []
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(previous + rows, indent=1))
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
