"""Causal multi-head self-attention over the raster order of a feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from msgnet.nn.causal import WNLinear


class CausalSelfAttention(nn.Module):
    """Multi-head attention where position i attends to positions 0 .. i (raster order).

    Attending to i itself is exact causality here because the prior only feeds this
    module features that are already shifted: the query and key at position i depend
    on tokens before i only (the reference PixelSNAIL attends to < i instead and has to
    zero the empty first row; including i avoids that special case).

    ``query`` (B, Cq, H, W) and ``key`` (B, Ck, H, W) -> (B, attention_dim, H, W); values
    are projected from ``key`` as in PixelSNAIL.
    """

    def __init__(
        self,
        query_channels: int,
        key_channels: int,
        attention_dim: int,
        num_heads: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError("attention_dim must be divisible by num_heads")
        self.attention_dim = attention_dim
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.dropout = dropout
        self.query = WNLinear(query_channels, attention_dim)
        self.key = WNLinear(key_channels, attention_dim)
        self.value = WNLinear(key_channels, attention_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        b, _, h, w = key.shape
        q_flat = query.flatten(2).transpose(1, 2)  # (B, N, Cq)
        k_flat = key.flatten(2).transpose(1, 2)
        q = self._heads(self.query(q_flat))
        k = self._heads(self.key(k_flat))
        v = self._heads(self.value(k_flat))
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, heads, N, head_dim)
        out = out.transpose(1, 2).reshape(b, h, w, self.attention_dim)
        return out.permute(0, 3, 1, 2)
