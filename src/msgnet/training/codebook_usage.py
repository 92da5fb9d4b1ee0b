"""Code usage of a VQ model's codebooks while it trains, and dead-code restarts.

Shared by MSGNet's double-path VQ-VAE (two codebooks) and the single-path cVQ-VAE baseline
(one): a codebook whose codes are never chosen collapses, and a collapsed codebook tells
the decoder nothing (the cVQ-VAE without restarts fell to perplexity 1 within 450 steps
on Multi-MNIST: its decoder drew from the layout alone).

With ``VQVAEConfig.restart_dead_codes``, codes not chosen during the last ``RESTART_WINDOW``
steps (or since the start of the epoch, if shorter) are moved onto random encoder outputs
of the current batch before its forward pass; at step 0 every code counts as unused, which
initialises the codebooks from the data. Restarts happen on rank 0 and are broadcast, so
all DDP ranks keep identical codebooks.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.distributed as tdist

from msgnet.nn.quantizer import VectorQuantizer, perplexity_from_counts
from msgnet.training import distributed as D

RESTART_WINDOW = 100  # steps between dead-code restarts (when enabled)

# The encoder outputs (B, D, h, w) of a batch, one per codebook, in the order of the quantisers.
Encode = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def current_dist(device: torch.device) -> D.DistInfo:
    """The process group as the loop set it up (rank/world from torch.distributed, if any)."""
    if tdist.is_available() and tdist.is_initialized():
        return D.DistInfo(tdist.get_rank(), tdist.get_world_size(), 0, device, False)
    return D.DistInfo(0, 1, 0, device, False)


class CodebookUsage:
    """Histograms of ``len(names)`` codebooks of ``num_embeddings`` codes: over the running epoch
    (dead-code report) and since the last restart (restart decisions). Checkpointed by the stage."""

    def __init__(self, names: Sequence[str], num_embeddings: int, seed: int = 0) -> None:
        self.names = tuple(names)
        self.seed = seed
        self.usage = torch.zeros(len(self.names), num_embeddings, dtype=torch.long)
        self.window_usage = torch.zeros_like(self.usage)
        self.restarted = 0  # codes restarted during the running epoch

    def to(self, device: torch.device) -> None:
        if self.usage.device != device:
            self.usage, self.window_usage = self.usage.to(device), self.window_usage.to(device)

    def due(self, step: int) -> bool:
        return step % RESTART_WINDOW == 0

    def observe(self, counts: Sequence[torch.Tensor]) -> None:
        """Add one batch's code histograms (one per codebook)."""
        stacked = torch.stack(list(counts))
        self.usage += stacked
        self.window_usage += stacked

    @torch.no_grad()
    def restart(self, quantizers: Sequence[VectorQuantizer], encode: Encode, model: torch.nn.Module,
                images: torch.Tensor, step: int) -> int:
        """Move codes unused since the last restart onto this batch's encoder outputs (``encode``
        runs ``model`` in eval mode, on rank 0), then give every rank rank 0's codebooks."""
        dist = current_dist(images.device)
        dead = D.all_reduce_sum(self.window_usage.clone(), dist) == 0
        restarted = 0
        if dist.is_main:
            was_training = model.training
            model.eval()
            latents = encode(images)
            model.train(was_training)
            g = torch.Generator().manual_seed(self.seed * 7_919 + step)
            for quantizer, z, d in zip(quantizers, latents, dead):
                flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                restarted += quantizer.restart_codes(d.cpu(), flat, g)
        for quantizer in quantizers:
            D.broadcast(quantizer.codebook.weight.data, dist)
        self.window_usage.zero_()
        self.restarted += restarted
        return restarted

    def epoch_end(self, dist: D.DistInfo, report_restarts: bool) -> dict[str, float]:
        """Dead codes and perplexity of each codebook over the epoch (all ranks), then a fresh epoch."""
        usage = D.all_reduce_sum(self.usage.clone(), dist)
        metrics: dict[str, float] = {}
        for name, row in zip(self.names, usage):
            metrics[f"dead_codes{name}"] = int((row == 0).sum())
        for name, row in zip(self.names, usage):
            metrics[f"epoch_ppl{name}"] = float(perplexity_from_counts(row))
        if report_restarts:
            metrics["restarted_codes"] = self.restarted
        self.restarted = 0
        self.usage.zero_()
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"usage": self.usage.cpu(), "window_usage": self.window_usage.cpu(), "restarted": self.restarted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "usage" in state:
            self.usage = state["usage"].clone()
        if "window_usage" in state:
            self.window_usage = state["window_usage"].clone()
        self.restarted = int(state.get("restarted", 0))
