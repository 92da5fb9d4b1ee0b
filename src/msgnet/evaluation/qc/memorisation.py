"""Nearest real training image of every generated image, in pixel space and in feature space.

A generated image that is a near-copy of a training image adds nothing to a training set and
leaks the training set to whoever receives the generated one; generative models memorise
small medical sets (Akbar et al., 2023). Two distances, because each misses what the other sees:

* **pixels** — ``sqrt(2 - 2 r)`` with ``r`` the correlation of the two images' pixels (area-averaged
  to at most 64 a side): 0 for a copy, ~1.4 for unrelated images, the same for a faint and a bright
  copy. A plain RMS difference would call every nearly empty image "close" to every other one;
  the correlation asks whether the *strokes* coincide;
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
    """uint8 images (N, C, H, W) -> centred unit vectors (N, D), downsampled to <= 64 px a side.

    A uniform image becomes the zero vector (distance 1 to everything; blank images are the
    degenerate-output checks' business)."""
    x = images.float().div_(255.0)
    h, w = x.shape[-2:]
    if max(h, w) > PIXEL_SIDE:
        scale = PIXEL_SIDE / max(h, w)
        x = F.adaptive_avg_pool2d(x, (max(1, round(h * scale)), max(1, round(w * scale))))
    x = x.flatten(1)
    return F.normalize(x - x.mean(1, keepdim=True), dim=1)


def _nearest(queries: torch.Tensor, reference: torch.Tensor, ref_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and Euclidean distance of each query's nearest reference row.

    The search uses ``|q|^2 + |r|^2 - 2 q.r``; the winner's distance is then recomputed
    directly, so a copy measures 0 and not float32 cancellation noise.
    """
    idx, dist = [], []
    for start in range(0, len(queries), CHUNK):
        q = queries[start : start + CHUNK]
        d = (q * q).sum(1, keepdim=True) + ref_sq.unsqueeze(0) - 2.0 * (q @ reference.T)
        where = d.argmin(1)
        idx.append(where)
        dist.append((q - reference[where]).norm(dim=1))
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
        p_idx, p_d = _nearest(pixels.to(self.pixels.device), self.pixels, self._pix_sq)
        f_idx, f_d = _nearest(features.to(self.features.device), self.features, self._feat_sq)
        return {
            "pixel_nn": self.ids[p_idx.cpu().numpy()],
            "pixel_distance": p_d.cpu().double().numpy(),
            "feature_nn": self.ids[f_idx.cpu().numpy()],
            "feature_distance": f_d.cpu().double().numpy(),
        }
