"""Two guards against a codes prior that recalls training images instead of reading its layout.

With few training images and many codes, a teacher-forced prior can lower its loss by recognising a
training map from its earlier tokens and copying the rest, whatever the layout says.

- **Input-token corruption** (``TrainConfig.token_corruption``): while training, a share of the
  *input* tokens is replaced by uniformly random tokens; the targets stay the true tokens. Recalling
  a map from corrupted tokens is unreliable, the layout is not corrupted, so reading it pays more.
- **Class gain**: the validation NLL over object positions (layout class != 0) with each layout's
  object classes permuted, minus the NLL with the true layouts, in nats per object token. About 0
  means the prior ignores which class the layout names; the public face of it, for a saved run, is
  :mod:`msgnet.evaluation.class_gain`. The codes prior's validation logs it (``val_class_gain``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from msgnet.layouts.classes import derangements, permute_object_classes

__all__ = ["ClassGainTally", "corrupt_tokens", "corruption_generator", "derangements", "permute_object_classes",
           "token_nll"]

# Keeps the corruption stream apart from the global stream (dropout), which is seeded with the same seed.
_CORRUPTION_SALT = 0x7C0DE5


def corruption_generator(seed: int, step: int, rank: int, device: torch.device | str) -> torch.Generator:
    """The generator of training step ``step``'s corruption on DDP rank ``rank``.

    A pure function of (seed, rank, step), as the data order is of (seed, epoch): a resumed run draws
    exactly what an uninterrupted one would, with no generator state to checkpoint, and ranks differ.
    """
    (state,) = np.random.SeedSequence([seed, rank, step, _CORRUPTION_SALT]).generate_state(1, np.uint64)
    return torch.Generator(device=device).manual_seed(int(state))


def corrupt_tokens(tokens: torch.Tensor, rate: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A copy of ``tokens`` in which each position, independently with probability ``rate``, holds a token
    drawn uniformly from ``range(num_classes)`` (by chance sometimes the same one, so about
    ``rate * (1 - 1 / num_classes)`` of them change). ``tokens`` itself is left alone: it stays the target.
    ``rate`` 0 returns ``tokens`` without drawing anything."""
    if rate <= 0:
        return tokens
    hit = torch.rand(tokens.shape, generator=generator, device=tokens.device) < rate
    noise = torch.randint(0, num_classes, tokens.shape, generator=generator, device=tokens.device,
                          dtype=tokens.dtype)
    return torch.where(hit, noise, tokens)


def token_nll(model: nn.Module, tokens: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    """Nats of each token (B, H, W) under the prior given ``condition``."""
    return F.cross_entropy(model(tokens, condition), tokens, reduction="none")


class ClassGainTally:
    """Object-token NLL of a codes prior under the true and under permuted layouts, summed batch by batch.

    ``num_condition_classes`` 0 is an unconditional prior: it cannot read the layout, so both NLLs
    are the same and the gain is 0. The permutations come from a generator of their own (``seed``):
    the global random stream that training draws from is left untouched, and the same validation
    batches get the same permutations at every validation, so successive figures compare.
    """

    def __init__(self, num_condition_classes: int, seed: int = 0) -> None:
        self.num_condition_classes = num_condition_classes
        self.generator = torch.Generator().manual_seed(seed)
        self.true_sum = 0.0
        self.permuted_sum = 0.0
        self.count = 0

    def add(self, model: nn.Module, tokens: torch.Tensor, layout: torch.Tensor,
            logits: torch.Tensor | None = None) -> None:
        """One batch: ``tokens`` (B, H, W) and the layout on the same grid (the condition of a codes
        prior, stacked); ``logits`` under the true layout when the caller has them already."""
        conditional = self.num_condition_classes > 0
        condition = layout if conditional else None
        if logits is None:
            nll_true = token_nll(model, tokens, condition)
        else:
            nll_true = F.cross_entropy(logits, tokens, reduction="none")
        if conditional:
            permuted = permute_object_classes(layout, self.num_condition_classes, self.generator)
            nll_permuted = token_nll(model, tokens, permuted)
        else:
            nll_permuted = nll_true
        objects = layout != 0
        self.true_sum += float(nll_true[objects].sum())
        self.permuted_sum += float(nll_permuted[objects].sum())
        self.count += int(objects.sum())

    def result(self) -> dict[str, float]:
        """``class_gain``, ``nll_true`` and ``nll_permuted`` in nats per object token ({} without objects)."""
        if not self.count:
            return {}
        true, permuted = self.true_sum / self.count, self.permuted_sum / self.count
        return {"class_gain": permuted - true, "nll_true": true, "nll_permuted": permuted}
