"""Plain vector quantiser (van den Oord et al. 2017): nearest code, straight-through gradients.

The codebook is learnt by the codebook loss ``||sg[z] - e||^2`` and the encoder is held
to its codes by ``beta * ||z - sg[e]||^2`` (``beta`` = the preset's ``commitment``). The
paper's authors tried EMA codebook updates and found they sometimes hurt, so there are
none here. Dead codes can optionally be restarted from encoder outputs
(:meth:`VectorQuantizer.restart_codes`), which the training stage calls when
``VQVAEConfig.restart_dead_codes`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    """Result of quantising a (B, D, H, W) map."""

    quantized: torch.Tensor  # (B, D, H, W), straight-through: forward = codes, backward = identity
    indices: torch.Tensor  # (B, H, W) int64
    codebook_loss: torch.Tensor  # scalar
    commitment_loss: torch.Tensor  # scalar, already multiplied by beta
    counts: torch.Tensor  # (K,) how often each code was chosen in this batch
    perplexity: torch.Tensor  # scalar, exp(entropy of the batch's code histogram)


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of a code histogram: the number of equally used codes it corresponds to."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    """``num_embeddings`` codes of length ``embedding_dim``; commitment weight ``beta``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.beta = beta
        self.codebook = nn.Embedding(num_embeddings, embedding_dim)
        # The original VQ-VAE initialisation: small uniform codes near the origin.
        nn.init.uniform_(self.codebook.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared L2) for each row of ``flat`` (N, D)."""
        weight = self.codebook.weight
        dist = (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ weight.t()
            + weight.pow(2).sum(1)[None, :]
        )
        return dist.argmin(1)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) encoder output -> (B, H, W) indices of the nearest codes."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return self.nearest(flat).view(z.shape[0], z.shape[2], z.shape[3])

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        # In fp32 even under bf16 autocast: a bf16 distance matmul picks a different nearest
        # code than inference (which runs fp32) would, and the codebook losses need the precision.
        with torch.autocast(z.device.type, enabled=False):
            return self._quantize(z.float())

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = self.nearest(flat.detach())
        codes = self.codebook(indices)
        codebook_loss = F.mse_loss(codes, flat.detach())
        commitment_loss = self.beta * F.mse_loss(flat, codes.detach())
        quantized = flat + (codes - flat).detach()  # straight-through estimator
        quantized = quantized.view(b, h, w, d).permute(0, 3, 1, 2).contiguous()
        # index_add_ rather than bincount: bincount reads its maximum back to the host (a GPU sync).
        counts = torch.zeros(self.num_embeddings, dtype=torch.long, device=indices.device)
        counts.index_add_(0, indices, torch.ones_like(indices))
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.view(b, h, w),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            counts=counts,
            perplexity=perplexity_from_counts(counts),
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) indices -> (B, D, H, W) code vectors."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(f"code indices must lie in [0, {self.num_embeddings})")
        return self.codebook(indices.long()).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def restart_codes(
        self, dead: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator | None = None
    ) -> int:
        """Replace the codes where ``dead`` (K,) is true by random rows of ``candidates`` (N, D).

        ``candidates`` are recent encoder outputs; drawing from them puts restarted codes
        where the data is, so they get chosen again. Returns the number of codes restarted.
        """
        idx = torch.nonzero(dead, as_tuple=False).flatten()
        if idx.numel() == 0 or candidates.numel() == 0:
            return 0
        pick = torch.randint(
            candidates.shape[0], (idx.numel(),), generator=generator, device=generator.device if generator else "cpu"
        )
        new = candidates[pick.to(candidates.device)].to(self.codebook.weight)
        self.codebook.weight[idx.to(self.codebook.weight.device)] = new
        return int(idx.numel())
