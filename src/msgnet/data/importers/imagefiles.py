"""Reading user image and mask files (PNG, JPEG, BMP, TIFF) into uint8 arrays, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from msgnet.errors import DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")


def one_line(exc: BaseException) -> str:
    """An exception as a short single line (library messages may span lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def _read_raw(path: Path, what: str) -> np.ndarray | Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: missing {what}")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path))
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as exc:  # decoders raise many kinds for corrupt files
        raise DataError(f"{path}: unreadable {what} ({one_line(exc)})") from None


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8: uint8 kept, bool to 0/255, others min..max -> 0..255.

    16-bit microscopy and float images have no fixed white point, so each image is
    stretched over its own range (recorded in dataset.json by the importers).
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    a = array.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) / (hi - lo) * 255.0).astype(np.uint8)


def read_image(path: Path) -> np.ndarray:
    """An image file as (H, W, C) uint8 with C in 1, 2, 3.

    LA images count as two channels (that is how msgnet stores 2-channel images); the
    alpha of RGBA is dropped; palette images become RGB; channel-first TIFFs are transposed.
    """
    raw = _read_raw(path, "image")
    if isinstance(raw, Image.Image):
        if raw.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
            raw = raw.convert("RGBA" if raw.mode in ("P", "PA") and "transparency" in raw.info else "RGB")
        elif raw.mode == "1":
            raw = raw.convert("L")
        elif raw.mode == "La":
            raw = raw.convert("LA")
        arr = np.asarray(raw)
    else:
        arr = raw
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[2] > 4:
        arr = arr.transpose(1, 2, 0)  # channel-first TIFF
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise DataError(f"{path}: unsupported image shape {tuple(arr.shape)} (need H x W with 1, 2 or 3 channels)")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(to_uint8(arr))


def read_mask(path: Path, colour: bool) -> np.ndarray:
    """A mask file: (H, W) integer class indices, or (H, W, 3) uint8 colours when ``colour``.

    Palette (P) PNGs are read as their indices unless ``colour`` is asked for.
    """
    raw = _read_raw(path, "mask")
    if isinstance(raw, Image.Image):
        if colour:
            arr = np.asarray(raw.convert("RGB"))
        elif raw.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
            arr = np.asarray(raw)
        else:
            arr = np.asarray(raw)
    else:
        arr = raw
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] > 4:
        arr = arr.transpose(1, 2, 0)
    if colour:
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] < 3:
            raise DataError(f"{path}: a colour mask must be RGB, got shape {tuple(arr.shape)}")
        return np.ascontiguousarray(arr[:, :, :3])
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):  # grey + alpha or RGBA: the alpha carries no class
            arr = arr[:, :, : arr.shape[2] - 1]
        if arr.shape[2] == 1 or all(np.array_equal(arr[:, :, 0], arr[:, :, k]) for k in range(1, arr.shape[2])):
            arr = arr[:, :, 0]
        else:
            raise DataError(f"{path}: a colour mask; give `palette` to map its colours to classes")
    if arr.ndim != 2:
        raise DataError(f"{path}: unsupported mask shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{path}: mask values must be whole class indices")
    return arr.astype(np.int64)
