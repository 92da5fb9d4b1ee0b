"""Looking inside a trained double-path VQ-VAE: the paper's Fig. 3 and Fig. 4.

- ``fig3_paths.png``: input | reconstruction | self-attention path alone | conv path alone.
  A path "alone" is decoded with the other path's quantised vectors set to zero
  (:meth:`DoublePathVQVAE.decode_contributions`).
- ``fig4_attention.png``: input with the chosen pixel marked | the attention of that
  pixel in the decoder's last self-attention layer, upsampled and overlaid on the input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from msgnet.errors import UsageError
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.training.codes import vqvae_dir
from msgnet.training.grid import make_grid, save_png, to_uint8_hwc

_MODES = {1: "L", 2: "LA", 3: "RGB"}


def read_image(path: Path, channels: int, size: int) -> torch.Tensor:
    """A PNG (or any Pillow image) as (1, C, size, size) floats in [0, 1]."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            if arr.shape[2] != channels:
                arr = np.asarray(im.convert(_MODES[channels]))
                arr = arr[:, :, None] if arr.ndim == 2 else arr
    except FileNotFoundError:
        raise UsageError(f"{path}: no such image") from None
    except Exception as exc:
        raise UsageError(f"{path}: unreadable image ({type(exc).__name__})") from None
    if arr.shape[:2] != (size, size):
        raise UsageError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, the model expects {size}x{size}")
    if arr.dtype != np.uint8:
        arr = (arr.astype(np.float64) / max(float(arr.max()), 1.0) * 255).astype(np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255.0


def attention_overlay(image: np.ndarray, attention: np.ndarray, pixel: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 image + (H, W) attention -> heat overlay (red = high) with the pixel marked."""
    heat = attention / max(float(attention.max()), 1e-12)
    grey = image.mean(axis=2, keepdims=True) / 255.0
    rgb = np.concatenate([0.5 * grey + 0.5 * heat[..., None], 0.5 * grey, 0.5 * grey * (1 - heat[..., None])], 2)
    out = (rgb.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    return mark(out, pixel)


def mark(image: np.ndarray, pixel: tuple[int, int]) -> np.ndarray:
    out = image.copy()
    r, c = pixel
    h, w = out.shape[:2]
    arm = max(1, min(h, w) // 32)
    out[max(r - arm, 0) : r + arm + 1, c] = (0, 255, 0)
    out[r, max(c - arm, 0) : c + arm + 1] = (0, 255, 0)
    return out


def _read_layout(model: DoublePathVQVAE, layout_path: Path | str | None) -> torch.Tensor | None:
    """The layout a decoder told it needs, as (1, H, W) class ids; None for the paper's decoder."""
    cfg = model.config
    if not model.told_layout:
        return None
    if layout_path is None:
        raise UsageError("layout_path: this run's decoder is told the layout: give the image's layout PNG")
    layout = read_image(Path(layout_path), 1, cfg.image_size)
    ids = (layout[:, 0] * 255.0).round().long()
    if int(ids.max()) >= cfg.layout_classes:
        raise UsageError(f"{layout_path}: class id {int(ids.max())} is not one of the run's {cfg.layout_classes} classes")
    return ids


@torch.no_grad()
def vqvae_inspect(
    run_dir: Path | str, image_path: Path | str, out_dir: Path | str, pixel: tuple[int, int] | None = None,
    layout_path: Path | str | None = None,
) -> list[Path]:
    """Write Fig. 3 and Fig. 4 PNGs for one image; ``pixel`` = (row, col), default the centre.
    ``layout_path``: the image's layout PNG (class ids), which a decoder told the layout needs."""
    model = DoublePathVQVAE.from_pretrained(vqvae_dir(run_dir))
    cfg = model.config
    x = read_image(Path(image_path), cfg.in_channels, cfg.image_size)
    layout = _read_layout(model, layout_path)
    if pixel is None:
        pixel = (cfg.image_size // 2, cfg.image_size // 2)
    if not (0 <= pixel[0] < cfg.image_size and 0 <= pixel[1] < cfg.image_size):
        raise UsageError(f"pixel: {pixel} lies outside the {cfg.image_size}x{cfg.image_size} image")
    codes = model.encode_indices(x)
    recon = model.decode_indices(*codes, layout)
    attn_only, conv_only = model.decode_contributions(*codes, layout)
    out_dir = Path(out_dir)
    fig3 = out_dir / "fig3_paths.png"
    save_png(make_grid([torch.cat([x, recon, attn_only, conv_only])]), fig3)
    written = [fig3]
    try:
        attn = model.decoder_attention_map(*codes, pixel, layout)  # (1, h', w')
    except ValueError as exc:
        raise UsageError(f"{vqvae_dir(run_dir)}: {exc}") from None
    up = F.interpolate(attn[None], size=(cfg.image_size, cfg.image_size), mode="nearest")[0, 0].numpy()
    img = to_uint8_hwc(x)[0]
    fig4 = out_dir / "fig4_attention.png"
    pad = np.full((img.shape[0], 2, 3), 255, np.uint8)
    save_png(np.concatenate([mark(img, pixel), pad, attention_overlay(img, up, pixel)], 1), fig4)
    written.append(fig4)
    return written
