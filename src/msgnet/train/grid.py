"""Tiny image-grid writer (Pillow) for the periodic PNGs of the training stages."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from msgnet.io import atomic_path


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] with C in {1, 2, 3} -> (B, H, W, 3) uint8.

    Two-channel images (BraTS: FLAIR, T1Gd) are shown as red/green with blue = 0.
    """
    x = images.detach().float().clamp(0, 1).cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 2:
        x = torch.cat([x, torch.zeros_like(x[:, :1])], 1)
    elif x.shape[1] != 3:
        raise ValueError(f"cannot show {x.shape[1]}-channel images")
    return (x.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def make_grid(rows: Sequence[torch.Tensor], padding: int = 2) -> np.ndarray:
    """Rows of (B, C, H, W) images (same B, H, W) -> one (H', W', 3) uint8 grid."""
    arrays = [to_uint8_hwc(r) for r in rows]
    b, h, w, _ = arrays[0].shape
    out = np.full((len(arrays) * (h + padding) + padding, b * (w + padding) + padding, 3), 255, np.uint8)
    for i, arr in enumerate(arrays):
        for j in range(b):
            y, x = padding + i * (h + padding), padding + j * (w + padding)
            out[y : y + h, x : x + w] = arr[j]
    return out


def save_png(array: np.ndarray, path: Path | str) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array as PNG atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_grid(rows: Sequence[torch.Tensor], path: Path | str) -> None:
    save_png(make_grid(rows), path)
