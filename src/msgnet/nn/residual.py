"""Residual stack of the VQ-VAE encoder and decoder (paper Table 4: residual dim 64, 2 blocks)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``x + Conv1x1(ReLU(Conv3x3(ReLU(x))))`` with a narrower bottleneck (``residual_dim``)."""

    def __init__(self, channels: int, residual_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, residual_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(residual_dim, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualStack(nn.Module):
    """``num_blocks`` residual blocks followed by a ReLU (as in the VQ-VAE papers)."""

    def __init__(self, channels: int, residual_dim: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualBlock(channels, residual_dim) for _ in range(num_blocks)))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.blocks(x))
