"""Opening the datasets an evaluation compares, and checking that they can be compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msgnet.data.format import Dataset, open_dataset
from msgnet.errors import UsageError


def open_input(path: Path | str, field: str) -> Dataset:
    """Open the dataset a request's ``field`` names; a missing folder names the field (the CLI, its flag)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{field} {path}: no such directory")
    if not path.is_dir():
        raise UsageError(f"{field} {path}: not a directory")
    return open_dataset(path)


def check_compatible(real: Dataset, synthetic: Dataset) -> None:
    """Refuse to compare datasets whose classes, image size or channels differ (one line, naming the file)."""
    r, s = real.info, synthetic.info
    where = synthetic.root / "dataset.json"
    if s.image_size != r.image_size:
        raise UsageError(
            f"{where}: image size {s.image_size[1]}x{s.image_size[0]} differs from the real set's "
            f"{r.image_size[1]}x{r.image_size[0]} ({real.root / 'dataset.json'})"
        )
    if s.channels != r.channels:
        raise UsageError(f"{where}: {s.channels} channels, the real set ({real.root}) has {r.channels}")
    if s.class_names != r.class_names:
        raise UsageError(
            f"{where}: classes {s.class_names} differ from the real set's {r.class_names} ({real.root})"
        )


def synthetic_ids(dataset: Dataset) -> list[int]:
    """Images of a generated set used for training: its train split if it has one, else every image."""
    train = dataset.info.splits.get("train") or []
    if train:
        return list(train)
    return [i for ids in dataset.info.splits.values() for i in ids]


def load_ids(dataset: Dataset, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) and layouts (N, H, W) of the given ids, validated."""
    from concurrent.futures import ThreadPoolExecutor

    if not ids:
        raise UsageError(f"{dataset.root / 'dataset.json'}: no images to evaluate")
    with ThreadPoolExecutor(max_workers=4) as pool:
        images = list(pool.map(dataset.read_image, ids))
        layouts = list(pool.map(dataset.read_layout, ids))
    return np.stack(images), np.stack(layouts)
