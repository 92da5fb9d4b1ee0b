"""DICE of predicted class maps against reference layouts, defined once for every report.

Two figures per class c >= 1 (background is never part of a DICE figure):

* **pooled DICE** (the headline): ``2 TP / (2 TP + FP + FN)`` with TP, FP, FN counted over
  *all* pixels of the evaluated split. A class that appears in neither prediction nor
  reference anywhere is undefined (NaN) and left out of the mean. Pooling matters here:
  a Multi-MNIST image holds only 3 of the 10 digit classes, and a per-image DICE would
  either ignore false positives of absent classes or count every correct absence as 1.
* **per-image DICE** (MONAI ``DiceMetric``, ``ignore_empty=True``): per image and class,
  only where the class is present in the reference; averaged over images per class.

The overall figure is the mean over object classes of the per-class values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

DICE_DEFINITION = (
    "pooled DICE per object class (2TP/(2TP+FP+FN) over all pixels of the split), "
    "overall = mean over object classes, background excluded; classes absent from both "
    "prediction and reference are left out"
)


@dataclass
class DiceResult:
    """DICE figures for one evaluation; lists are indexed by class id (index 0, background, is None)."""

    dice: float
    per_class: list[float | None]
    dice_per_image: float
    per_class_per_image: list[float | None]
    num_images: int

    def to_json(self) -> dict:
        return {
            "dice": self.dice,
            "per_class": self.per_class,
            "dice_per_image": self.dice_per_image,
            "per_class_per_image": self.per_class_per_image,
            "num_images": self.num_images,
        }


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None] + [None if np.isnan(v) else float(v) for v in values[1:]]


@dataclass
class DiceAccumulator:
    """Accumulate pooled counts and MONAI per-image DICE over batches of (prediction, reference) maps."""

    num_classes: int
    num_images: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        from monai.metrics import DiceMetric

        # (reference, prediction) pixel counts, kept on the device of the first update and
        # read back once in result(): evaluating on a GPU never waits per batch.
        self._joint: torch.Tensor | None = None
        self._metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """``pred`` and ``target``: (N, H, W) integer class maps (numpy or torch, any device)."""
        pred = torch.as_tensor(pred).long()
        target = torch.as_tensor(target).long().to(pred.device)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} differ")
        c = self.num_classes
        joint = torch.bincount((target.reshape(-1) * c + pred.reshape(-1)), minlength=c * c).reshape(c, c)
        self._joint = joint if self._joint is None else self._joint + joint
        onehot_p = F.one_hot(pred, c).permute(0, 3, 1, 2).float()
        onehot_t = F.one_hot(target, c).permute(0, 3, 1, 2).float()
        self._metric(y_pred=onehot_p, y=onehot_t)
        self.num_images += int(pred.shape[0])

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = self.num_classes
        joint = np.zeros((c, c), np.int64) if self._joint is None else self._joint.cpu().numpy()
        tp = np.diag(joint).copy()
        return tp, joint.sum(0) - tp, joint.sum(1) - tp  # FP: predicted c, reference another; FN: the reverse

    def result(self) -> DiceResult:
        tp, fp, fn = self._counts()
        denom = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan).astype(np.float64)
        per_image = np.full(self.num_classes, np.nan)
        if self.num_images:
            # MONAI's "mean_batch" skips NaN (class absent from an image's reference).
            per_image[1:] = self._metric.aggregate().cpu().numpy().astype(np.float64)
            # An object class absent from every reference aggregates to 0 in MONAI; call it undefined.
            per_image[1:][(tp + fn)[1:] == 0] = np.nan
        obj = pooled[1:]
        obj_img = per_image[1:]
        return DiceResult(
            dice=float(np.nanmean(obj)) if np.isfinite(obj).any() else float("nan"),
            per_class=_nan_to_none(pooled),
            dice_per_image=float(np.nanmean(obj_img)) if np.isfinite(obj_img).any() else float("nan"),
            per_class_per_image=_nan_to_none(per_image),
            num_images=self.num_images,
        )


def dice_scores(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int) -> DiceResult:
    """DICE of a whole set of class maps (N, H, W) at once."""
    acc = DiceAccumulator(num_classes)
    acc.update(pred, target)
    return acc.result()
