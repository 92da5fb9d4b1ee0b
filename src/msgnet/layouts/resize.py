"""Moving a layout between the image grid and the latent grid (the one rule, DESIGN.md §1)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Background loses exact ties: a latent cell half covered by an object keeps the object,
# so that small objects survive downsampling as well as they can.
_BACKGROUND_TIE_PENALTY = 1e-3
_CHUNK = 512


def downsample_layout(
    layout: np.ndarray | torch.Tensor, size: int | tuple[int, int], num_classes: int | None = None
) -> np.ndarray | torch.Tensor:
    """Class map (..., H, W) -> (..., h, w): one-hot, area-averaged, then argmax.

    Accepts numpy or torch, a single map or a batch; returns the same kind (uint8 for
    numpy, int64 for torch). Among object classes a tie goes to the lower id.
    """
    is_numpy = isinstance(layout, np.ndarray)
    t = torch.as_tensor(np.asarray(layout) if is_numpy else layout).long()
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    squeeze = t.dim() == 2
    if squeeze:
        t = t[None]
    lead = t.shape[:-2]
    t = t.reshape(-1, *t.shape[-2:])
    n_cls = int(num_classes if num_classes is not None else int(t.max()) + 1)
    if tuple(t.shape[-2:]) == out_hw:
        result = t
    else:
        # In chunks: the one-hot of a whole 50k-image split would take tens of GB.
        parts = []
        for chunk in t.split(_CHUNK):
            onehot = F.one_hot(chunk, n_cls).permute(0, 3, 1, 2).float()
            frac = F.interpolate(onehot, size=out_hw, mode="area")
            frac[:, 0] -= _BACKGROUND_TIE_PENALTY
            parts.append(frac.argmax(1))
        result = torch.cat(parts) if parts else t.new_zeros((0, *out_hw))
    result = result.reshape(*lead, *out_hw)
    if squeeze:
        result = result[0]
    if is_numpy:
        return result.numpy().astype(np.uint8)
    return result


def upsample_layout(layout: np.ndarray | torch.Tensor, size: int | tuple[int, int]) -> np.ndarray | torch.Tensor:
    """Latent-grid class map -> image grid by nearest neighbour (for display and annotations)."""
    is_numpy = isinstance(layout, np.ndarray)
    t = torch.as_tensor(np.asarray(layout) if is_numpy else layout)
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    squeeze = t.dim() == 2
    x = t[None, None] if squeeze else t.reshape(-1, 1, *t.shape[-2:])
    up = F.interpolate(x.float(), size=out_hw, mode="nearest").round().long()
    up = up[0, 0] if squeeze else up.reshape(*t.shape[:-2], *out_hw)
    if is_numpy:
        return up.numpy().astype(np.uint8)
    return up
