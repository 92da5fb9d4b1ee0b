"""Palettes, overlays of a layout on its image, and PNG grids of image/overlay pairs."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, PngImagePlugin

from msgnet.errors import UsageError
from msgnet.io import PNG_MARK, atomic_path


def default_palette(num_classes: int) -> np.ndarray:
    """Black background and well separated hues for the object classes: (num_classes, 3) uint8."""
    pal = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(1, num_classes):
        hue = ((i - 1) * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
        pal[i] = (int(r * 255), int(g * 255), int(b * 255))
    return pal


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8 with 1, 2 or 3 channels -> (H, W, 3) for display (2 channels: shown as R, G)."""
    if image.ndim == 2:
        image = image[:, :, None]
    c = image.shape[2]
    if c == 1:
        return np.repeat(image, 3, axis=2)
    if c == 2:
        return np.concatenate([image, np.zeros_like(image[:, :, :1])], axis=2)
    return image[:, :, :3]


def colorize(layout: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class map -> RGB image through the palette (unknown ids shown white)."""
    pal = np.full((256, 3), 255, dtype=np.uint8)
    pal[: len(palette)] = palette
    return pal[layout]


def overlay(image: np.ndarray, layout: np.ndarray, palette: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the coloured layout over the image where the layout is not background."""
    rgb = to_rgb(image).astype(np.float32)
    col = colorize(layout, palette).astype(np.float32)
    mask = (layout > 0)[:, :, None]
    out = np.where(mask, (1 - alpha) * rgb + alpha * col, rgb)
    return out.clip(0, 255).astype(np.uint8)


def grid(tiles: Sequence[np.ndarray], columns: int, pad: int = 2, fill: int = 64) -> np.ndarray:
    """Arrange equally sized RGB tiles (H, W, 3) in a grid with padding."""
    if not tiles:
        raise ValueError("grid of no tiles")
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), fill, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = to_rgb(tile)
    return canvas


def pairs_grid(
    images: Sequence[np.ndarray], layouts: Sequence[np.ndarray], palette: np.ndarray, columns: int = 8
) -> np.ndarray:
    """Grid of image/overlay pairs: each image followed by its layout overlaid on it."""
    tiles: list[np.ndarray] = []
    for img, lay in zip(images, layouts):
        tiles.append(to_rgb(img))
        tiles.append(overlay(img, lay, palette))
    return grid(tiles, columns=2 * max(1, columns // 2) if columns > 1 else 2)


def save_png(array: np.ndarray, path: Path | str, scale: int = 1) -> Path:
    """Write an RGB or grey uint8 array as PNG atomically (optionally upscaled for legibility)."""
    if scale < 1:
        raise UsageError(f"scale: must be a positive integer, got {scale}")
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    info = PngImagePlugin.PngInfo()
    info.add_text(*PNG_MARK)  # a later command may replace a PNG msgnet wrote, and only such a PNG
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", pnginfo=info)
    return Path(path)
