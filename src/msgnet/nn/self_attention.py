"""SAGAN-style self-attention over the positions of a feature map (Zhang et al. 2019).

Query and key are 1x1 convolutions to ``C/8`` channels, the value keeps ``C``; every
position attends to every position (softmax over keys) and the result is added back
as ``gamma * attention + x`` with ``gamma`` a learnt scalar initialised at 0, so a new
attention layer starts as the identity and the network decides how much to use it.
"""

from __future__ import annotations

import torch
from torch import nn


class SelfAttention2d(nn.Module):
    """Self-attention block ``gamma * softmax(q^T k) v + x`` on a (B, C, H, W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention matrix (B, N, N), row ``i`` = where position ``i`` (row-major) looks."""
        q = self.query(x).flatten(2)  # (B, C', N)
        k = self.key(x).flatten(2)
        return torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = self.attention_weights(x)  # (B, N, N)
        v = self.value(x).flatten(2)  # (B, C, N)
        out = torch.bmm(v, attn.transpose(1, 2)).view(b, c, h, w)
        return self.gamma * out + x

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor, pixel: tuple[int, int]) -> torch.Tensor:
        """Attention of the query at ``pixel`` = (row, col) over all positions: (B, H, W), sums to 1."""
        b, _, h, w = x.shape
        row, col = pixel
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"pixel {pixel} outside a {h}x{w} feature map")
        return self.attention_weights(x)[:, row * w + col].view(b, h, w)
