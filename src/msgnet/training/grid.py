"""Image grids of model outputs (tensors) for the periodic PNGs of the training stages.

The drawing itself (channel handling, tiling, atomic PNG writing) is msgnet.layouts.render's;
this module only turns (B, C, H, W) tensors in [0, 1] into its uint8 arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from msgnet.layouts.render import grid, save_png, to_rgb

__all__ = ["to_uint8_hwc", "make_grid", "save_grid", "save_png"]


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] with C in {1, 2, 3} -> (B, H, W, 3) uint8 (2 channels shown as red/green)."""
    x = images.detach().float().clamp(0, 1).cpu()
    if x.shape[1] not in (1, 2, 3):
        raise ValueError(f"cannot show {x.shape[1]}-channel images")
    arr = (x.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    return np.stack([to_rgb(a) for a in arr])


def make_grid(rows: Sequence[torch.Tensor], padding: int = 2) -> np.ndarray:
    """Rows of (B, C, H, W) images (same B, H, W) -> one (H', W', 3) uint8 grid, one row per tensor."""
    arrays = [to_uint8_hwc(r) for r in rows]
    tiles = [tile for arr in arrays for tile in arr]
    return grid(tiles, columns=arrays[0].shape[0], pad=padding, fill=255)


def save_grid(rows: Sequence[torch.Tensor], path: Path | str) -> None:
    save_png(make_grid(rows), path)
