"""Per-class scale and shift of a feature map, read from a layout (CLADE, Tan et al. 2021).

SPADE modulates a decoder's features with a scale and shift computed by convolutions over the
layout; CLADE showed that one learned (scale, shift) per class does as well at a fraction of
the cost. Here the layout's one-hot map is area-averaged to the feature map's size (the class
fractions of each cell, the project's downsampling rule before its argmax) and a bias-free 1x1
convolution turns the fractions into the scale and shift: exactly CLADE's table lookup inside
an object, a blend of the tables on a cell an object boundary crosses.

The table starts at zero, so a decoder with modulation computes at step 0 exactly what it would
without it (``features * (1 + 0) + 0``); training then learns how much each class changes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def layout_one_hot(layout: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class map -> (B, K, H, W) float one-hot; classes beyond the table are refused."""
    if layout.dim() != 3:
        raise ValueError(f"expected layouts (B, H, W), got {tuple(layout.shape)}")
    layout = layout.long()
    if layout.numel() and (int(layout.min()) < 0 or int(layout.max()) >= num_classes):
        raise ValueError(f"layout classes must lie in [0, {num_classes})")
    return F.one_hot(layout, num_classes).permute(0, 3, 1, 2).float()


class ClassModulation(nn.Module):
    """``features * (1 + scale[class]) + shift[class]`` for ``channels`` features and ``num_classes`` classes."""

    def __init__(self, num_classes: int, channels: int) -> None:
        super().__init__()
        self.table = nn.Conv2d(num_classes, 2 * channels, 1, bias=False)
        nn.init.zeros_(self.table.weight)

    def forward(self, features: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """``one_hot`` (B, K, H, W) at the image's size (or any size the features divide)."""
        fractions = F.interpolate(one_hot, size=features.shape[-2:], mode="area")
        scale, shift = self.table(fractions.to(features.dtype)).chunk(2, dim=1)
        return features * (1 + scale) + shift
