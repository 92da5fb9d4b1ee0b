"""The scores quality control gives every image + annotation pair, as columns of one table.

* **consistency** — ``dice``: the pair's DICE between the consistency segmenter's prediction
  and the pair's own layout (pooled over its object classes; background excluded);
  ``objects`` / ``objects_found``: connected components of the layout, and how many of them
  the segmenter labels with their own class on at least half of their pixels.
* **rule** — ``rule_broken``: the parts of the dataset's rule (dataset.json ``"rule"``) the
  pair breaks, ``""`` when it obeys, ``"n/a"`` when the dataset declares no rule.
* **memorisation** — ``pixel_nn`` / ``pixel_distance`` and ``feature_nn`` / ``feature_distance``:
  the nearest real training image and its distance (:mod:`msgnet.evaluation.qc.memorisation`).
* **degenerate output** — ``contrast`` (pixel standard deviation, 0-1), ``saturation`` (fraction
  of pixels at full intensity), ``smallest_object`` (pixels of the smallest component, 0 if none).
* **foreground** — ``foreground``: the layout's share of object pixels; ``predicted_foreground``:
  the share the segmenter labels as any object. A pair with almost no object pixels cannot be
  judged by DICE (a sliver of a nucleus at a tile's edge scores 0 or 1 by chance); it is judged
  by whether its image shows objects its layout lacks (:mod:`msgnet.evaluation.qc.thresholds`).

:func:`swap_partners` pairs real images with other real layouts: what a bad pair looks like, so
the consistency cuts can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from msgnet.data.rules import rule_violations
from msgnet.layouts.boxes import layout_to_objects

FOUND_FRACTION = 0.5  # an object is "found" when its class covers at least this share of its pixels

FLOAT_COLUMNS = ("dice", "found_fraction", "pixel_distance", "feature_distance", "contrast", "saturation",
                 "foreground", "predicted_foreground")
INT_COLUMNS = ("objects", "objects_found", "smallest_object", "pixel_nn", "feature_nn")
TEXT_COLUMNS = ("rule_broken",)


@dataclass
class ScoreTable:
    """One row per pair; ``columns`` maps a column name to a length-N numpy array."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def subset(self, idx: np.ndarray | Sequence[int]) -> "ScoreTable":
        idx = np.asarray(idx, dtype=np.int64)
        return ScoreTable({k: v[idx] for k, v in self.columns.items()})

    @staticmethod
    def concat(tables: Sequence["ScoreTable"]) -> "ScoreTable":
        tables = [t for t in tables if len(t)]
        if not tables:
            return ScoreTable()
        return ScoreTable({k: np.concatenate([t[k] for t in tables]) for k in tables[0].columns})

    def row(self, i: int) -> dict[str, Any]:
        return {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in self.columns.items()}


def pair_dice(pred: torch.Tensor, layout: torch.Tensor, num_classes: int) -> np.ndarray:
    """Per-pair DICE (N,) of class maps (N, H, W), pooled over the object classes of the pair:
    ``2 * sum_c TP_c / sum_c (|pred = c| + |layout = c|)`` for c >= 1.

    Pooled rather than averaged per class: a stray blob of a class the layout lacks then costs
    what its pixels weigh, instead of a whole class's worth. A pair where neither map holds an
    object scores 1 (nothing to disagree on); an empty layout is caught by the degenerate checks.
    """
    n, c = pred.shape[0], num_classes
    key = (torch.arange(n, device=pred.device).view(n, 1, 1) * c + layout.long()) * c + pred.long()
    joint = torch.bincount(key.reshape(-1), minlength=n * c * c).reshape(n, c, c).double()
    tp = joint.diagonal(dim1=1, dim2=2)[:, 1:].sum(1)
    total = joint.sum(2)[:, 1:].sum(1) + joint.sum(1)[:, 1:].sum(1)
    out = torch.where(total > 0, 2 * tp / total.clamp_min(1), torch.ones_like(total))
    return out.cpu().numpy()


def objects_found(pred: np.ndarray, layout: np.ndarray) -> tuple[int, int, int]:
    """(objects, found, smallest object's pixels) of one pair: components of each class of ``layout``."""
    total = found = 0
    smallest = 0
    for cls in np.unique(layout):
        if cls == 0:
            continue
        labels, count = ndimage.label(layout == cls)
        if count == 0:
            continue
        area = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        hit = np.bincount(labels[pred == cls], minlength=count + 1)[1:]
        total += count
        found += int((hit >= FOUND_FRACTION * area).sum())
        small = int(area.min())
        smallest = small if smallest == 0 else min(smallest, small)
    return total, found, smallest


def image_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(contrast, saturation) per image (N, H, W, C) uint8: pixel std in [0, 1], share of pixels at 255."""
    flat = images.reshape(len(images), -1)
    contrast = flat.astype(np.float32).std(axis=1) / 255.0
    saturation = (flat == 255).mean(axis=1)
    return contrast.astype(np.float64), saturation.astype(np.float64)


def rule_column(rule: dict[str, Any] | None, layouts: np.ndarray) -> np.ndarray:
    """Broken rule parts per pair, comma-joined; ``"n/a"`` for every pair when there is no rule."""
    if not rule:
        return np.array(["n/a"] * len(layouts), dtype=object)
    needs_layout = "region" in rule
    out = [",".join(rule_violations(rule, layout_to_objects(lay), lay if needs_layout else None))
           for lay in layouts]
    return np.array(out, dtype=object)


def consistency_columns(pred: torch.Tensor, layouts: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """``dice``, ``objects``, ``objects_found``, ``found_fraction``, ``smallest_object``, ``foreground`` and
    ``predicted_foreground`` of a batch."""
    lay_t = torch.from_numpy(np.ascontiguousarray(layouts)).to(pred.device)
    dice = pair_dice(pred, lay_t, num_classes)
    foreground = (layouts.reshape(len(layouts), -1) > 0).mean(axis=1).astype(np.float64)
    predicted = (pred.reshape(len(layouts), -1) > 0).double().mean(dim=1).cpu().numpy()
    pred_np = pred.cpu().numpy()
    counts = np.array([objects_found(p, lay) for p, lay in zip(pred_np, layouts)], dtype=np.int64).reshape(-1, 3)
    objects, found = counts[:, 0], counts[:, 1]
    fraction = np.where(objects > 0, found / np.maximum(objects, 1), 1.0)
    return {"dice": dice, "objects": objects, "objects_found": found, "found_fraction": fraction,
            "smallest_object": counts[:, 2], "foreground": foreground, "predicted_foreground": predicted}


def swap_partners(layouts: np.ndarray, seed: int = 0, max_overlap: float = 0.5, tries: int = 20) -> np.ndarray:
    """(k, 2) rows ``(i, j)``: image ``i`` is to be paired with layout ``j`` of another pair.

    A partner must really differ: the layouts agree (same class) on less than ``max_overlap`` of the
    union of their object pixels. Tiles of one place in consecutive frames, or two empty layouts,
    would otherwise make "swapped" pairs that are good pairs. Partners are drawn from one seeded
    order; an image with no such partner among its next ``tries`` in that order is left out.
    """
    n = len(layouts)
    flat = layouts.reshape(n, -1)
    fg = flat > 0
    order = np.random.default_rng(seed).permutation(n)
    out = []
    for pos, i in enumerate(order):
        for step in range(1, min(n, tries + 1)):
            j = order[(pos + step) % n]
            union = int((fg[i] | fg[j]).sum())
            agree = int(((flat[i] == flat[j]) & fg[i]).sum())
            if union and agree < max_overlap * union:
                out.append((int(i), int(j)))
                break
    return np.array(out, dtype=np.int64).reshape(-1, 2)
