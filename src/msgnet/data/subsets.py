"""Seeded subsets of a split: one definition shared by the U-Net benchmark and by training.

The benchmark's ``--real-subset N`` and a generator trained on "N real images" must mean the
very same images, or extra real data sneaks into a low-data comparison unseen. Subsets are
*nested*: for one seed the first 100 images of the order are also inside the 500, so a
low-data curve (N = 100, 500, ...) only ever adds images as N grows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from msgnet.errors import UsageError

SUBSET_SEED = 0  # fixed: a subset is named by its size alone, so runs and benchmarks agree


def seeded_subset(ids: Sequence[int], n: int, seed: int = SUBSET_SEED, where: str = "subsets") -> list[int]:
    """The first ``n`` ids of a seeded permutation of ``ids``, returned sorted."""
    ids = np.asarray(list(ids), dtype=np.int64)
    if n < 1:
        raise UsageError(f"{where}: must be at least 1, got {n}")
    if n > len(ids):
        raise UsageError(f"{where}: {n} images asked, the training split has {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted(int(i) for i in ids[order[:n]])
