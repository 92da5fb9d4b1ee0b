"""In-memory torch views of a dataset split."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from msgnet.data.format import Dataset
from msgnet.errors import UsageError


def load_split_ids(dataset: Dataset, split: str, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and layouts of ``split`` (all, or only ``ids``, in that order), uint8.

    The whole split is loaded and then indexed: its cache (``DIR/.cache``) is per split, so a
    subset costs no extra decoding and shares the cache with full-split runs.
    """
    images, layouts = dataset.load_split(split)
    if ids is None:
        return images, layouts
    row = {int(i): k for k, i in enumerate(dataset.ids(split))}
    missing = [int(i) for i in ids if int(i) not in row]
    if missing:
        raise UsageError(f"{dataset.root / 'dataset.json'}: image {missing[0]} is not in split {split!r}")
    if not len(ids):
        raise UsageError(f"{dataset.root / 'dataset.json'}: no images selected from split {split!r}")
    rows = np.asarray([row[int(i)] for i in ids], dtype=np.int64)
    return images[rows], layouts[rows]


class ImageLayoutDataset(TorchDataset):
    """(image float32 (C, H, W) in [0, 1], layout int64 (H, W)) pairs, all held in memory.

    Images stay uint8 in memory (4x smaller) and are converted per item.
    """

    def __init__(self, dataset: Dataset, split: str, ids: Sequence[int] | None = None):
        """All of ``split``, or only its images ``ids`` (a training subset)."""
        images, layouts = load_split_ids(dataset, split, ids)
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.layouts = torch.from_numpy(layouts)
        self.num_classes = dataset.info.num_classes

    @classmethod
    def from_arrays(cls, images: np.ndarray, layouts: np.ndarray, num_classes: int) -> "ImageLayoutDataset":
        self = cls.__new__(cls)
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.layouts = torch.from_numpy(layouts)
        self.num_classes = num_classes
        return self

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float() / 255.0, self.layouts[index].long()

    def batch_of(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``indices`` in one indexing operation, on the device the data lives on;
        equal to stacking the items one by one."""
        indices = indices.to(self.images.device)
        return self.images[indices].float() / 255.0, self.layouts[indices].long()

    def to(self, device: torch.device | str) -> "ImageLayoutDataset":
        """Hold the uint8 images and layouts on ``device`` (a GPU: batches never cross the bus)."""
        self.images, self.layouts = self.images.to(device), self.layouts.to(device)
        return self
