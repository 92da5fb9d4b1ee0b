"""Layouts whose objects all change class: the same shapes, other classes.

The diagnostics that ask whether a model reads the class a layout names (the codes prior's class
gain, the decoder's obedience) and the decoder's obedience loss compare a layout with such a
changed copy of itself.
"""

from __future__ import annotations

import torch

from msgnet.errors import UsageError


def derangements(n: int, num_condition_classes: int, generator: torch.Generator | None,
                 where: str = "prior.num_condition_classes") -> torch.Tensor:
    """(n, K) int64 lookup tables: row b sends background 0 to 0 and the object classes 1..K-1 to a
    uniformly random permutation of them that moves every class (drawn on the CPU from ``generator``;
    permutations with a fixed point are drawn again, so every object's class really changes)."""
    k = num_condition_classes - 1
    if k < 2:
        raise UsageError(f"{where}: {num_condition_classes} classes are too few to change every object's class "
                         "(needs at least two object classes besides the background)")
    identity = torch.arange(k)
    perm = torch.argsort(torch.rand(n, k, generator=generator), dim=1)
    fixed = (perm == identity).any(1)
    while fixed.any():  # about e draws per row: a share 1/e of permutations has no fixed point
        perm[fixed] = torch.argsort(torch.rand(int(fixed.sum()), k, generator=generator), dim=1)
        fixed = (perm == identity).any(1)
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), perm + 1], 1)


def permute_object_classes(layout: torch.Tensor, num_condition_classes: int,
                           generator: torch.Generator | None, where: str = "prior.num_condition_classes") -> torch.Tensor:
    """``layout`` (B, H, W) with each map's object classes permuted by its own derangement
    (:func:`derangements`): same shapes, same background, every object of another class."""
    if layout.numel() and (int(layout.min()) < 0 or int(layout.max()) >= num_condition_classes):
        raise ValueError(f"layout classes must lie in [0, {num_condition_classes}), got "
                         f"[{int(layout.min())}, {int(layout.max())}]")
    table = derangements(layout.shape[0], num_condition_classes, generator, where).to(layout.device)
    return torch.gather(table, 1, layout.long().flatten(1)).view_as(layout)
