"""Annotation fidelity: does each annotated object look like the class it is annotated with?

For digit datasets the in-project classifier reads the crop of every annotated object
(framed like an MNIST digit) and we count how often it reads the annotated class. On real
data this is the classifier's own accuracy on such crops: the ceiling a generator can reach.
(The segmentation side, a real-trained U-Net segmenting generated images, is part of the
U-Net benchmark.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from msgnet.data.format import Dataset
from msgnet.errors import UsageError
from msgnet.evaluation.digit_classifier import DigitClassifier, classify, crop_to_cell, digit_of_class
from msgnet.evaluation.stats import fmt_rate, wilson_interval
from msgnet.device import choose_device


def collect_cells(dataset: Dataset, ids: Sequence[int], progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-framed crops (M, 28, 28) of every annotated object of ``ids`` and their class ids (M,)."""
    annotations = dataset.annotations()
    cells, classes = [], []
    for iid in tqdm(ids, desc="crops", unit="img", disable=not progress, leave=False):
        objs = annotations.get(iid, [])
        if not objs:
            continue
        image = dataset.read_image(iid)
        for o in objs:
            cells.append(crop_to_cell(image, o.bbox))
            classes.append(o.category_id)
    if not cells:
        return np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    return np.stack(cells), np.asarray(classes, dtype=np.int64)


def annotation_fidelity(dataset: Dataset, classifier: DigitClassifier, split: str | None = None,
                        progress: bool = True, device: torch.device | str | None = None) -> dict:
    """Share of annotated objects the classifier reads as their annotated digit (Wilson 95% interval).

    The classifier runs on ``device`` (None: CUDA when available, else CPU); it is moved there in
    place, as ``nn.Module.to`` does. Its predictions come back to the host in one read.
    """
    mapping = digit_of_class(dataset.info.class_names)
    if mapping is None:
        raise UsageError(f"{dataset.root / 'dataset.json'}: object classes are not the digits 0-9; "
                         "annotation fidelity needs the digit classifier")
    ids = dataset.ids(split) if split else [i for v in dataset.info.splits.values() for i in v]
    cells, classes = collect_cells(dataset, ids, progress)
    n = len(classes)
    if n == 0:
        raise UsageError(f"{dataset.root / 'annotations.json'}: no annotated objects to check")
    truth = np.array([mapping[int(c)] for c in classes])
    pred = classify(classifier.to(choose_device(device)), cells)
    correct = pred == truth
    lo, hi = wilson_interval(int(correct.sum()), n)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    per_digit = {str(d): (float(correct[truth == d].mean()) if (truth == d).any() else None) for d in range(10)}
    return {
        "dataset": str(dataset.root),
        "split": split or "all",
        "images": len(ids),
        "objects": n,
        "agreement": float(correct.mean()),
        "ci95": [lo, hi],
        "per_digit": per_digit,
        "confusion": confusion.tolist(),
        "crop": "box padded to a square, resized to 20x20, centred in a 28x28 cell (MNIST framing)",
    }


def format_fidelity(result: dict) -> str:
    lo, hi = result["ci95"]
    lines = [
        f"annotation fidelity {result['dataset']} ({result['split']}): the digit classifier reads the "
        f"annotated class for {fmt_rate(result['agreement'], lo, hi)} of {result['objects']} objects",
        "  per digit  " + " ".join(f"{d}:{'n/a' if v is None else f'{100 * v:.1f}'}"
                                   for d, v in result["per_digit"].items()),
    ]
    return "\n".join(lines)
