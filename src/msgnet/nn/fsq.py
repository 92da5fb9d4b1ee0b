"""Finite scalar quantisation (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

The encoder's vector is projected to ``len(levels)`` numbers, each bounded to its level count by
a tanh and rounded to the nearest integer (straight-through), so a code is a point of a fixed
grid of ``prod(levels)`` points. There is no codebook to learn, hence nothing that can collapse:
no dead codes, no codebook or commitment loss, and every grid point stays reachable. Indices are
the grid points in mixed radix, so the codes prior models them exactly as it models VQ indices.

The projected input is standardised per channel (batch statistics while training, their running
averages after), so that it spreads over the levels: a bounded grid alone does not stop the encoder
from putting every input into one cell.

The interface is :class:`~msgnet.nn.quantizer.VectorQuantizer`'s (``forward``, ``indices``,
``lookup``), so the VQ-VAE takes either.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from msgnet.nn.quantizer import QuantizerOutput, perplexity_from_counts

# Keeps the bound a hair inside the outermost level, so that rounding never leaves the grid.
_EPS = 1e-3


class FiniteScalarQuantizer(nn.Module):
    """``prod(levels)`` codes; 1x1 projections from and back to ``embedding_dim`` channels."""

    def __init__(self, levels: Sequence[int], embedding_dim: int) -> None:
        super().__init__()
        if not levels or any(int(n) < 2 for n in levels):
            raise ValueError(f"FSQ levels must be at least 2 each, got {list(levels)}")
        self.levels = tuple(int(n) for n in levels)
        self.embedding_dim = embedding_dim
        self.num_embeddings = int(torch.tensor(self.levels).prod())
        self.project_in = nn.Conv2d(embedding_dim, len(self.levels), 1)
        # Standardised per channel before the bound (no learned scale): FSQ's grid cannot collapse, but
        # its input can. Measured without this: at initialisation every input fell in one cell (std
        # 0.004), and one path drifted into tanh's flat tail (mean -10) where no gradient brings it back,
        # one code for good. A unit spread puts the data across the levels at every step.
        self.normalise = nn.BatchNorm2d(len(self.levels), affine=False)
        self.project_out = nn.Conv2d(len(self.levels), embedding_dim, 1)
        levels_t = torch.tensor(self.levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1]), 0)
        # Buffers, not parameters: they follow .to(device) and are rebuilt from the config alone.
        self.register_buffer("_levels", levels_t, persistent=False)
        self.register_buffer("_basis", basis.long(), persistent=False)

    # ---- the grid -------------------------------------------------------------------------
    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, H, W) -> each channel squashed into [-(n-1)/2, (n-1)/2] (shifted by 1/2 for even n)."""
        levels = self._levels.view(1, -1, 1, 1)
        half = (levels - 1) * (1 + _EPS) / 2
        offset = torch.where(levels.remainder(2) == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _grid(self, z: torch.Tensor) -> torch.Tensor:
        """Bounded, rounded (straight-through) integer grid points, (B, L, H, W)."""
        bounded = self._bound(z)
        return bounded + (bounded.round() - bounded).detach()

    def _normalised(self, grid: torch.Tensor) -> torch.Tensor:
        """Integer grid points -> [-1, 1] per channel (what the decoder's projection reads)."""
        return grid / (self._levels.view(1, -1, 1, 1) // 2)

    def _to_indices(self, grid: torch.Tensor) -> torch.Tensor:
        shifted = (grid.detach().round() + (self._levels.view(1, -1, 1, 1) // 2)).long()
        return (shifted * self._basis.view(1, -1, 1, 1)).sum(1)

    def _from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) indices -> (B, L, H, W) integer grid points."""
        levels = self._levels.long().view(1, -1, 1, 1)
        digits = (indices.long()[:, None] // self._basis.view(1, -1, 1, 1)) % levels
        return (digits - levels // 2).float()

    # ---- the quantiser interface ------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        # fp32 even under autocast: a bf16 tanh can round a value onto the neighbouring level.
        with torch.autocast(z.device.type, enabled=False):
            grid = self._grid(self.normalise(self.project_in(z.float())))
            quantized = self.project_out(self._normalised(grid))
            indices = self._to_indices(grid)
        counts = torch.zeros(self.num_embeddings, dtype=torch.long, device=indices.device)
        counts.index_add_(0, indices.flatten(), torch.ones_like(indices.flatten()))
        zero = z.new_zeros((), dtype=torch.float32)
        return QuantizerOutput(quantized=quantized, indices=indices, codebook_loss=zero, commitment_loss=zero,
                               counts=counts, perplexity=perplexity_from_counts(counts))

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) encoder output -> (B, H, W) code indices."""
        with torch.autocast(z.device.type, enabled=False):
            return self._to_indices(self._bound(self.normalise(self.project_in(z.float()))).round())

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) indices -> (B, D, H, W) vectors the decoder reads."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(f"code indices must lie in [0, {self.num_embeddings})")
        return self.project_out(self._normalised(self._from_indices(indices)))
