"""Nearest real training image of every generated image, in pixel space and in feature space.

A generated image that is a near-copy of a training image adds nothing to a training set and
leaks the training set to whoever receives the generated one; generative models memorise
small medical sets (Akbar et al., 2023). Two distances, because each misses what the other sees:

* **pixels** — root-mean-square difference in [0, 1] intensity units, on images area-averaged
  to at most 64 pixels a side (the distance of a copy is 0 at any size; smaller vectors keep the
  search over tens of thousands of training images cheap);
* **features** — Euclidean distance of the consistency segmenter's unit-length bottleneck
  features (0 for a copy, up to 2), which also catches a copy that was shifted or re-rendered.

The search is exhaustive (chunked matrix products on the device), so no neighbour is missed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_SIDE = 64
CHUNK = 512


def pixel_vectors(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float vectors (N, D) in [0, 1], downsampled to <= 64 px a side."""
    x = images.float().div_(255.0)
    h, w = x.shape[-2:]
    if max(h, w) > PIXEL_SIDE:
        scale = PIXEL_SIDE / max(h, w)
        x = F.adaptive_avg_pool2d(x, (max(1, round(h * scale)), max(1, round(w * scale))))
    return x.flatten(1)


def _nearest(queries: torch.Tensor, reference: torch.Tensor, ref_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and squared Euclidean distance of each query's nearest reference row."""
    idx, dist = [], []
    for start in range(0, len(queries), CHUNK):
        q = queries[start : start + CHUNK]
        d = (q * q).sum(1, keepdim=True) + ref_sq.unsqueeze(0) - 2.0 * (q @ reference.T)
        best, where = d.min(1)
        idx.append(where)
        dist.append(best.clamp_min(0))
    return torch.cat(idx), torch.cat(dist)


@dataclass
class NearestReal:
    """The real training images a generated set is compared against (their ids, pixels and features)."""

    ids: np.ndarray  # dataset ids of the reference rows
    pixels: torch.Tensor  # (N, D)
    features: torch.Tensor  # (N, F), unit length

    def __post_init__(self) -> None:
        self._pix_sq = (self.pixels * self.pixels).sum(1)
        self._feat_sq = (self.features * self.features).sum(1)

    def nearest(self, pixels: torch.Tensor, features: torch.Tensor) -> dict[str, np.ndarray]:
        """``pixel_nn``, ``pixel_distance``, ``feature_nn``, ``feature_distance`` for query rows."""
        p_idx, p_d2 = _nearest(pixels.to(self.pixels.device), self.pixels, self._pix_sq)
        f_idx, f_d2 = _nearest(features.to(self.features.device), self.features, self._feat_sq)
        dim = self.pixels.shape[1]
        return {
            "pixel_nn": self.ids[p_idx.cpu().numpy()],
            "pixel_distance": (p_d2 / dim).sqrt().cpu().double().numpy(),
            "feature_nn": self.ids[f_idx.cpu().numpy()],
            "feature_distance": f_d2.sqrt().cpu().double().numpy(),
        }
