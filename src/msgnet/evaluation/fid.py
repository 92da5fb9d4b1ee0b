"""FID and KID in the feature space of the in-project digit classifier (Inception weights cannot be
fetched offline). Computed with torchmetrics' FrechetInceptionDistance / KernelInceptionDistance,
which accept a custom feature module.

Two feature spaces:

* ``images``: whole images (grey; RGB -> luminance) at their native size through the
  classifier's conv trunk, globally average-pooled (``channels[1]`` features). Global
  pooling makes the features size-agnostic; it ignores *where* things are (coherency and
  the U-Net figures measure that).
* ``objects``: every annotated object cropped and framed like an MNIST digit (28x28),
  through the classifier's penultimate layer (``hidden`` features).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from msgnet.evaluation.digit_classifier import DigitClassifier, crop_to_cell, to_gray

FEATURE_TEXT = {
    "images": "msgnet digit classifier, conv trunk globally average-pooled, whole grey images at native size",
    "objects": "msgnet digit classifier, penultimate layer, annotated objects framed as 28x28 MNIST cells",
}


class ClassifierFeatures(nn.Module):
    """torchmetrics feature module: (N, 1, H, W) float in [0, 1] -> (N, D) features."""

    def __init__(self, classifier: DigitClassifier, kind: str):
        super().__init__()
        if kind not in FEATURE_TEXT:
            raise ValueError(f"unknown feature kind {kind!r}")
        self.classifier = classifier.eval()
        self.kind = kind
        self.num_features = classifier.config.channels[1] if kind == "images" else classifier.config.hidden

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.kind == "images":
            return self.classifier.pooled_features(x)
        return self.classifier.embed(x)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> (N, 1, H, W) float grey in [0, 1]."""
    gray = np.stack([to_gray(im) for im in images])
    return torch.from_numpy(gray).float().div_(255.0).unsqueeze(1)


def object_cells(images: np.ndarray, boxes: Sequence[Sequence[tuple[int, int, int, int]]]) -> np.ndarray:
    """MNIST-framed cells (M, 28, 28) of every box of every image."""
    cells = [crop_to_cell(im, b) for im, bs in zip(images, boxes) for b in bs]
    return np.stack(cells) if cells else np.zeros((0, 28, 28), dtype=np.uint8)


def fid_kid(real: torch.Tensor, fake: torch.Tensor, classifier: DigitClassifier, kind: str,
            batch_size: int = 256, kid_subsets: int = 100, seed: int = 0) -> dict:
    """FID and KID of ``fake`` against ``real`` ((N, 1, H, W) float in [0, 1]) in the chosen feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    feats = ClassifierFeatures(classifier, kind)
    if len(real) < 2 or len(fake) < 2:
        return {"fid": None, "kid_mean": None, "kid_std": None, "features": FEATURE_TEXT[kind],
                "n_real": len(real), "n_fake": len(fake), "note": "too few samples"}
    subset = min(1000, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=feats, normalize=True, reset_real_features=True)
    torch.manual_seed(seed)  # KID draws random subsets
    kid = KernelInceptionDistance(feature=feats, normalize=True, subsets=kid_subsets, subset_size=subset)
    for data, is_real in ((real, True), (fake, False)):
        for s in range(0, len(data), batch_size):
            batch = data[s : s + batch_size]
            fid.update(batch, real=is_real)
            kid.update(batch, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset,
        "features": FEATURE_TEXT[kind],
        "feature_dim": feats.num_features,
        "n_real": len(real),
        "n_fake": len(fake),
    }
