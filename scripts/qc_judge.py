"""Does quality control still tell matched pairs from mismatched ones when it learned from few images?

    .venv/bin/python scripts/qc_judge.py --data DIR [--train-subset 100] [--seed 0] [--json OUT.json]

Prepares QC exactly as ``msgnet run --train-subset N`` does (the consistency segmenter trained on the
same N training images, thresholds fitted on the validation split), then scores the unseen real test
pairs as they are and *swapped*: each test image with the layout of another test image (a derangement,
so no pair keeps its own layout). A judge that holds rejects nearly every swapped pair and keeps
nearly every real one. Prints both rejection rates with Wilson 95% intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--train-subset", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segmenter", type=Path, default=None, help="cache folder [DATA/.cache/qc-judge-N]")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from msgnet.data.format import open_dataset
    from msgnet.data.provenance import choose_training_data
    from msgnet.evaluation.qc.checker import QCSettings, QualityControl
    from msgnet.evaluation.stats import wilson_interval

    real = open_dataset(args.data)
    ids = choose_training_data(real, args.train_subset).ids
    segmenter_dir = args.segmenter or args.data / ".cache" / f"qc-judge-{args.train_subset}"
    qc = QualityControl.prepare(real, segmenter_dir, QCSettings(), torch.device("cpu"), ids)
    images, layouts = real.load_split("test")
    rng = np.random.default_rng(args.seed)
    shift = rng.permutation(len(images))
    swapped_layouts = layouts[np.roll(shift, 1)][np.argsort(shift)]  # image shift[k] gets layout shift[k-1]
    assert not any(np.array_equal(a, b) for a, b in zip(swapped_layouts, layouts))
    result = {"data": str(args.data), "train_images": len(ids or []), "segmenter": qc.segmenter.record,
              "real_val_rejected": 1 - qc.real_val_kept}
    for name, lays in (("real_test", layouts), ("swapped_test", swapped_layouts)):
        reasons = qc.reasons(qc.score(images, lays))
        rejected = sum(bool(r) for r in reasons)
        lo, hi = wilson_interval(rejected, len(reasons))
        result[name] = {"pairs": len(reasons), "rejected": rejected / len(reasons), "ci95": [lo, hi]}
        print(f"{name:13s}: {rejected} of {len(reasons)} rejected ({100 * rejected / len(reasons):.1f}%, "
              f"95% CI {100 * lo:.1f}-{100 * hi:.1f}%)")
    print(f"real val rejected: {100 * result['real_val_rejected']:.1f}% (the thresholds keep 95% of it); "
          f"segmenter val DICE {qc.segmenter.record.get('val_dice')}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
