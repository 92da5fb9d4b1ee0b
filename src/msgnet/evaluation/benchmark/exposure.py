"""Which images every optimiser step of a U-Net training sees, drawn up front.

A training's images live in one *pool*: the real images first, then the images a setting adds
(copy-paste images or generated pairs). A plan is a (steps, width) table of pool rows, made in
one of three ways (:class:`msgnet.evaluation.benchmark.policy.PairPolicy` names them):

* **on top** — every step one real batch, drawn exactly as the real-only baseline draws it
  (the real stream depends only on the seed and the number of real images, never on what is
  added), plus ``ratio x batch`` added images from a second, independent stream. Equal real
  exposure: the baselines and this setting see *identical* real batches, step for step.
* **union** — the added images join the training set and each batch is one slice of a
  permutation of real ∪ added, so a pool of 42 pairs beside 1,000 real images fills 4% of a
  batch, not half of it.
* **pretrain** — the first ``pretrain_steps`` steps draw added images only, the rest are the
  real stream's first steps (fine-tuning, same total number of steps).

An on-top plan may carry a second added set, copy-paste images, between the real images and the
pairs in the pool: every step then takes the real batch, the copy-paste images exactly as the
``augment+copy-paste`` baseline draws them (same stream, same seed), and the pairs from a third
stream. That setting is the baseline step for step, plus pairs.

No row appears twice within one step unless the pool is smaller than the step's width.
The whole plan moves to the device once: no per-step host work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MIXINGS = ("on-top", "union", "pretrain")


@dataclass
class ExposurePlan:
    """Per-step rows of the pool: ``batches`` (steps, width); the first ``real_columns`` columns of an
    on-top plan are the real stream; steps before ``pretrain_steps`` draw added images only."""

    batches: torch.Tensor
    num_real: int
    real_columns: int
    pretrain_steps: int = 0
    copy_paste_columns: int = 0  # on top with copy-paste: these columns after the real ones are copy-paste rows

    @property
    def steps(self) -> int:
        return int(self.batches.shape[0])

    @property
    def real(self) -> torch.Tensor | None:
        """The equal-exposure real stream (on-top and real-only plans), else None."""
        return None if self.real_columns == 0 else self.batches[self.pretrain_steps:, : self.real_columns]

    @property
    def added(self) -> torch.Tensor | None:
        """Rows of the added images (indices into the added set: copy-paste images first where the plan
        carries them, then the pairs) of an on-top or added-only plan."""
        if self.real_columns == self.batches.shape[1]:
            return None
        return self.batches[:, self.real_columns :] - self.num_real

    @property
    def copy_paste(self) -> torch.Tensor | None:
        """Rows of the copy-paste images (indices into them) of an on-top plan that carries them, else None."""
        if not self.copy_paste_columns:
            return None
        return self.batches[:, self.real_columns : self.real_columns + self.copy_paste_columns] - self.num_real

    def to(self, device: torch.device) -> "ExposurePlan":
        return ExposurePlan(self.batches.to(device), self.num_real, self.real_columns, self.pretrain_steps,
                            self.copy_paste_columns)


def epoch_batches(num: int, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, batch) indices: one permutation per pass, batches never straddle two passes."""
    if num < 1 or batch < 1:
        raise ValueError("need at least one image and a batch of at least one")
    batch = min(batch, num)
    per_pass = num // batch
    passes = -(-steps // per_pass)
    rows = [rng.permutation(num)[: per_pass * batch].reshape(per_pass, batch) for _ in range(passes)]
    return np.concatenate(rows)[:steps]


def _stream(num: int, width: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, width) rows of ``num``; a pool narrower than ``width`` is repeated within a step (the
    only case where a row appears twice in one step)."""
    if steps == 0:
        return np.zeros((0, width), dtype=np.int64)
    if num >= width:
        return epoch_batches(num, width, steps, rng)
    return np.stack([rng.permutation(np.resize(rng.permutation(num), width)) for _ in range(steps)])


def _on_top(num_added: int, ratio: float | None, batch_size: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, k) rows of an added set on top of the real batch: k = max(1, round(ratio x batch)), at most the set."""
    per_step = min(num_added, max(1, int(round((ratio or 1.0) * batch_size))))
    return epoch_batches(num_added, per_step, steps, rng)


def make_plan(num_real: int, num_added: int, batch_size: int, ratio: float | None, steps: int, seed: int,
              mixing: str = "on-top", pretrain_steps: int = 0, num_copy_paste: int = 0,
              copy_paste_ratio: float | None = None) -> ExposurePlan:
    """The plan of one training.

    ``num_real`` 0 means "added images only" (synthetic-only): ``batch_size`` added per step.
    On top: every step takes ``min(batch_size, num_real)`` real images and, when ``num_added`` > 0,
    ``max(1, round(ratio * batch_size))`` added ones, never more than the pool holds. With
    ``num_copy_paste`` > 0 (on top only) the pool is real, then copy-paste images, then the added
    pairs; each step adds ``max(1, round(copy_paste_ratio * batch_size))`` copy-paste rows drawn from
    the stream an ``augment+copy-paste`` baseline of the same seed draws, then the pairs' rows.
    """
    if mixing not in MIXINGS:
        raise ValueError(f"unknown mixing {mixing!r} (known: {', '.join(MIXINGS)})")
    if num_real < 1 and num_added < 1:
        raise ValueError("a training needs real or added images")
    if num_copy_paste and (mixing != "on-top" or num_real < 1 or num_added < 1):
        raise ValueError("copy-paste images go on top of real images, beside pairs on top")
    real_rng, added_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    width = min(batch_size, num_real) if num_real else min(batch_size, num_added)
    if num_real == 0:
        table, real_cols = epoch_batches(num_added, width, steps, added_rng), 0
    elif num_added == 0:
        table, real_cols = epoch_batches(num_real, width, steps, real_rng), width
    elif mixing == "union":
        table, real_cols = epoch_batches(num_real + num_added, width, steps, real_rng), 0
        return ExposurePlan(torch.from_numpy(table), num_real, real_cols)
    elif mixing == "pretrain":
        if not 0 < pretrain_steps < steps:
            raise ValueError(f"pretraining takes 1 to {steps - 1} of the {steps} steps, not {pretrain_steps}")
        first = _stream(num_added, width, pretrain_steps, added_rng) + num_real
        then = epoch_batches(num_real, width, steps - pretrain_steps, real_rng)
        return ExposurePlan(torch.from_numpy(np.concatenate([first, then])), num_real, width, pretrain_steps)
    elif num_copy_paste:
        # The copy-paste stream takes the added stream's seed: the baseline's very rows; the pairs a third one.
        cp = _on_top(num_copy_paste, copy_paste_ratio, batch_size, steps, added_rng) + num_real
        pairs_rng = np.random.default_rng([seed, 2])
        pairs = _on_top(num_added, ratio, batch_size, steps, pairs_rng) + num_real + num_copy_paste
        table = np.concatenate([epoch_batches(num_real, width, steps, real_rng), cp, pairs], 1)
        return ExposurePlan(torch.from_numpy(table), num_real, width, copy_paste_columns=cp.shape[1])
    else:
        added = _on_top(num_added, ratio, batch_size, steps, added_rng) + num_real
        table, real_cols = np.concatenate([epoch_batches(num_real, width, steps, real_rng), added], 1), width
    return ExposurePlan(torch.from_numpy(table), num_real, real_cols)
