"""Which images every optimiser step of a U-Net training sees: equal real exposure by construction.

The real index stream depends only on the seed and the number of real images, never on what a
setting adds, so the real-only baseline, standard augmentation, copy-paste and real + synthetic
see *identical* sequences of real batches. Added images come from a second, independent stream.
The whole plan is drawn up front and moved to the device once: no per-step host work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ExposurePlan:
    """Per-step index batches: ``real`` (steps, B) into the real set, ``added`` (steps, B') into the added pool."""

    real: torch.Tensor | None
    added: torch.Tensor | None

    @property
    def steps(self) -> int:
        return int((self.real if self.real is not None else self.added).shape[0])  # type: ignore[union-attr]

    def to(self, device: torch.device) -> "ExposurePlan":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ExposurePlan(move(self.real), move(self.added))


def epoch_batches(num: int, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, batch) indices: one permutation per pass, batches never straddle two passes."""
    if num < 1 or batch < 1:
        raise ValueError("need at least one image and a batch of at least one")
    batch = min(batch, num)
    per_pass = num // batch
    passes = -(-steps // per_pass)
    rows = [rng.permutation(num)[: per_pass * batch].reshape(per_pass, batch) for _ in range(passes)]
    return np.concatenate(rows)[:steps]


def make_plan(num_real: int, num_added: int, batch_size: int, ratio: float | None, steps: int,
              seed: int) -> ExposurePlan:
    """The plan of one training.

    ``num_real`` 0 means "added images only" (synthetic-only): ``batch_size`` added per step.
    Otherwise every step takes ``min(batch_size, num_real)`` real images and, when
    ``num_added`` > 0, ``max(1, round(ratio * batch_size))`` added ones.
    """
    real = added = None
    if num_real > 0:
        real = torch.from_numpy(epoch_batches(num_real, batch_size, steps, np.random.default_rng([seed, 0])))
    if num_added > 0:
        per_step = batch_size if num_real == 0 else max(1, int(round((ratio or 1.0) * batch_size)))
        added = torch.from_numpy(epoch_batches(num_added, per_step, steps, np.random.default_rng([seed, 1])))
    if real is None and added is None:
        raise ValueError("a training needs real or added images")
    return ExposurePlan(real, added)
