"""The one place that knows how two code maps and a layout become the priors' 2H x W grid.

The self-attention path's codes come first (top half), the convolutional path's codes
second (bottom half), stacked along height as in the authors' code. The H x W layout
is duplicated the same way so that each code sees the layout of its own position.
"""

from __future__ import annotations

import torch


def stack_codes(codes_attn: torch.Tensor, codes_conv: torch.Tensor) -> torch.Tensor:
    """(B, H, W) + (B, H, W) -> (B, 2H, W), self-attention path on top."""
    if codes_attn.shape != codes_conv.shape or codes_attn.dim() != 3:
        raise ValueError(
            f"code maps must both be (B, H, W) of equal shape, got {tuple(codes_attn.shape)} "
            f"and {tuple(codes_conv.shape)}"
        )
    return torch.cat([codes_attn, codes_conv], dim=1)


def split_codes(stacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2H, W) -> ((B, H, W) self-attention codes, (B, H, W) convolutional codes)."""
    if stacked.dim() != 3 or stacked.shape[1] % 2:
        raise ValueError(f"stacked codes must be (B, 2H, W), got {tuple(stacked.shape)}")
    h = stacked.shape[1] // 2
    return stacked[:, :h], stacked[:, h:]


def stack_layout(layout_hw: torch.Tensor) -> torch.Tensor:
    """(B, H, W) layout at latent resolution -> (B, 2H, W), the same layout for both halves."""
    if layout_hw.dim() != 3:
        raise ValueError(f"layout must be (B, H, W), got {tuple(layout_hw.shape)}")
    return torch.cat([layout_hw, layout_hw], dim=1)
