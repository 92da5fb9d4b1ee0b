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
from msgnet.evaluation.requests import FidelityRequest
from msgnet.evaluation.stats import fmt_rate, wilson_interval
from msgnet.device import choose_device


def collect_cells(dataset: Dataset, ids: Sequence[int],
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-framed crops (M, 28, 28) of every annotated object of ``ids``, their class ids (M,) and
    the position in ``ids`` of the image each comes from (M,)."""
    annotations = dataset.annotations()
    cells, classes, owners = [], [], []
    for k, iid in enumerate(tqdm(ids, desc="crops", unit="img", disable=not progress, leave=False)):
        objs = annotations.get(iid, [])
        if not objs:
            continue
        image = dataset.read_image(iid)
        for o in objs:
            cells.append(crop_to_cell(image, o.bbox))
            classes.append(o.category_id)
            owners.append(k)
    if not cells:
        return np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.stack(cells), np.asarray(classes, dtype=np.int64), np.asarray(owners, dtype=np.int64)


def _broken_class_sets(allowed: list[list[int]], classes: np.ndarray, owners: np.ndarray) -> dict[int, bool]:
    """Per image (``owners`` value): whether the per-object ``classes`` of that image form a set not allowed."""
    allowed_sets = {tuple(sorted(int(c) for c in s)) for s in allowed}
    return {int(k): tuple(sorted(int(c) for c in classes[owners == k])) not in allowed_sets for k in np.unique(owners)}


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
    cells, classes, owners = collect_cells(dataset, ids, progress)
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
    result = {
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
    allowed = (dataset.info.rule or {}).get("allowed_class_sets")
    if allowed:
        # Paper §4.2: which images *show* a class set the rule forbids, by what the classifier reads,
        # beside how many were *annotated* (for generated pairs: given) with one.
        class_of_digit = {d: c for c, d in mapping.items()}
        read = np.array([class_of_digit.get(int(d), -1) for d in pred])
        read_broken = _broken_class_sets(allowed, read, owners)
        annotated_broken = _broken_class_sets(allowed, classes, owners)
        with_objects = len(annotated_broken)
        shown, annotated = sum(read_broken.values()), sum(annotated_broken.values())
        # Images that show a forbidden set exactly as annotated: every object reads as its class.
        as_given = sum(broken and bool(correct[owners == k].all()) for k, broken in annotated_broken.items())
        result["rule_allowed_class_sets"] = {
            "images": with_objects, "annotated_broken": annotated / with_objects,
            "read_broken": shown / with_objects, "read_broken_ci95": list(wilson_interval(shown, with_objects)),
            "broken_as_annotated": as_given / with_objects,
            "broken_as_annotated_ci95": list(wilson_interval(as_given, with_objects)),
        }
    return result


def format_fidelity(result: dict) -> str:
    lo, hi = result["ci95"]
    lines = [
        f"annotation fidelity {result['dataset']} ({result['split']}): the digit classifier reads the "
        f"annotated class for {fmt_rate(result['agreement'], lo, hi)} of {result['objects']} objects",
        "  per digit  " + " ".join(f"{d}:{'n/a' if v is None else f'{100 * v:.1f}'}"
                                   for d, v in result["per_digit"].items()),
    ]
    sets = result.get("rule_allowed_class_sets")
    if sets:
        lo, hi = sets["read_broken_ci95"]
        glo, ghi = sets["broken_as_annotated_ci95"]
        lines.append(f"  the rule's allowed class sets: {100 * sets['annotated_broken']:.1f}% of {sets['images']} images "
                     f"are annotated with a forbidden set; the classifier reads a forbidden set in "
                     f"{fmt_rate(sets['read_broken'], lo, hi)}, exactly the annotated forbidden digits in "
                     f"{fmt_rate(sets['broken_as_annotated'], glo, ghi)}")
    return "\n".join(lines)


def run_fidelity(req: FidelityRequest) -> dict:
    """`msgnet eval fidelity` as a library call: open ``req.data``, load (or train) the classifier, measure;
    the result names the classifier used."""
    from msgnet.evaluation.digit_classifier import get_classifier
    from msgnet.evaluation.inputs import open_input

    data = open_input(req.data, "data")
    model, where = get_classifier(req.classifier, progress=req.progress, device=req.device)
    result = annotation_fidelity(data, model, req.split, progress=req.progress, device=req.device)
    result["classifier"] = str(where)
    return result
