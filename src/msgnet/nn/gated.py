"""Gated residual block of PixelSNAIL: x + a * sigmoid(b)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from msgnet.nn.causal import CausalConv2d, WNConv2d


class GatedResBlock(nn.Module):
    """Gated residual block (reference PixelSNAIL ``GatedResBlock``).

    ``h = conv1(elu(x)) [+ aux_conv(elu(aux))]``; ``h = conv2(dropout(elu(h))) [+ cond(c)]``;
    ``(a, b) = split(h)``; ``out = x + a * sigmoid(b)``.

    With ``causal=True`` and ``kernel_size > 1`` both convolutions are
    :class:`CausalConv2d` including the current position (the features they read are
    already shifted). ``kernel_size == 1`` is a per-position block (causal either way).
    ``condition_channels > 0`` adds a bias-free 1x1 projection of a condition map before
    the gate; ``aux_channels > 0`` adds a 1x1 projection of an auxiliary input after conv1.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int = 1,
        causal: bool = True,
        dropout: float = 0.0,
        condition_channels: int = 0,
        aux_channels: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.kernel_size = kernel_size
        if kernel_size == 1:
            self.conv1: WNConv2d = WNConv2d(in_channels, channels, 1)
            self.conv2: WNConv2d = WNConv2d(channels, 2 * in_channels, 1)
        elif causal:
            self.conv1 = CausalConv2d(in_channels, channels, kernel_size)
            self.conv2 = CausalConv2d(channels, 2 * in_channels, kernel_size)
        else:
            if kernel_size % 2 == 0:
                raise ValueError("a non-causal gated block needs an odd kernel size")
            pad = kernel_size // 2
            self.conv1 = WNConv2d(in_channels, channels, kernel_size, padding=pad)
            self.conv2 = WNConv2d(channels, 2 * in_channels, kernel_size, padding=pad)
        self.aux_conv = WNConv2d(aux_channels, channels, 1) if aux_channels > 0 else None
        self.condition = (
            WNConv2d(condition_channels, 2 * in_channels, 1, bias=False)
            if condition_channels > 0
            else None
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        aux: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.conv1(F.elu(x))
        if self.aux_conv is not None:
            if aux is None:
                raise ValueError("this gated block needs its auxiliary input")
            h = h + self.aux_conv(F.elu(aux))
        h = self.conv2(self.dropout(F.elu(h)))
        if self.condition is not None:
            if condition is None:
                raise ValueError("this gated block needs its condition")
            h = h + self.condition(condition)
        a, b = h.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)
