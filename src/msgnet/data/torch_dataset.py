"""In-memory torch views of a dataset split."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from msgnet.data.format import Dataset


class ImageLayoutDataset(TorchDataset):
    """(image float32 (C, H, W) in [0, 1], layout int64 (H, W)) pairs, all held in memory.

    Images stay uint8 in memory (4x smaller) and are converted per item.
    """

    def __init__(self, dataset: Dataset, split: str):
        images, layouts = dataset.load_split(split)
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
