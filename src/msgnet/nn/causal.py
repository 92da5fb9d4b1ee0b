"""Weight-normalised and causal (masked) convolutions for autoregressive priors.

Raster order: position (i, j) comes before (i', j') when i < i', or i == i' and j < j'.
A :class:`CausalConv2d` output at (i, j) reads its input on the rows i-kh+1 .. i-1 (full
kernel width, columns j-left .. j+right) and on row i only the columns j-left .. j
(``include_center=True``) or j-left .. j-1 (``include_center=False``). The masked taps
are the *last* taps of the kernel in raster order, which is what lets the cached sampler
drop them by truncating the flattened kernel.

All convolutions are weight normalised (w = g * v / ||v||, Salimans & Kingma), as in the
reference PixelSNAIL. :meth:`WNConv2d.folded_weight` gives the plain weight for inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pair(kernel_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(kernel_size, int):
        return kernel_size, kernel_size
    kh, kw = kernel_size
    return int(kh), int(kw)


def _norm_per_output(v: torch.Tensor) -> torch.Tensor:
    """L2 norm of every output slice (dim 0), shaped to broadcast against ``v``."""
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


class WNConv2d(nn.Module):
    """Weight-normalised 2-D convolution with optional fixed weight mask.

    Parameters are ``weight_v`` (direction), ``weight_g`` (per-output scale) and ``bias``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.padding = padding
        v = torch.empty(out_channels, in_channels, kh, kw)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # nn.Conv2d's default
        # The mask is derived from the architecture, so it is not part of the state dict.
        self.register_buffer("mask", mask, persistent=False)
        if mask is not None:
            v = v * mask
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(_norm_per_output(v).clone())
        if bias:
            fan_in = in_channels * kh * kw
            if mask is not None:
                fan_in = max(int(mask.sum().item()) * in_channels, 1)
            bound = 1.0 / math.sqrt(fan_in)
            self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    def folded_weight(self) -> torch.Tensor:
        """The plain convolution weight g * v / ||v|| (masked taps exactly zero)."""
        v = self.weight_v if self.mask is None else self.weight_v * self.mask
        return v * (self.weight_g / _norm_per_output(v).clamp_min(1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.folded_weight(), self.bias, padding=self.padding)


class CausalConv2d(WNConv2d):
    """Masked convolution that only looks at earlier positions in raster order.

    ``kernel_size`` (kh, kw): kh rows ending at the current row, kw columns with
    ``left = kw // 2`` before and ``right = kw - 1 - left`` after the current column
    (even widths lean left, towards the already generated side). ``include_center``
    decides whether the current position itself is read: False for the first layer
    over tokens ("mask A"), True on features that are already shifted ("mask B").
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        include_center: bool = True,
        bias: bool = True,
    ) -> None:
        kh, kw = _pair(kernel_size)
        if kh < 1 or kw < 1:
            raise ValueError(f"kernel size must be positive, got {(kh, kw)}")
        left = kw // 2
        if not include_center and left == 0 and kh == 1:
            raise ValueError("a 1x1 causal convolution without its centre reads nothing")
        mask = torch.ones(1, 1, kh, kw)
        mask[..., kh - 1, left + int(include_center) :] = 0
        super().__init__(in_channels, out_channels, (kh, kw), padding=0, bias=bias, mask=mask)
        self.left = left
        self.right = kw - 1 - left
        self.include_center = include_center

    @property
    def current_row_taps(self) -> int:
        """Number of unmasked taps on the current row (columns j-left .. j or .. j-1)."""
        return self.left + int(self.include_center)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, _ = self.kernel_size
        x = F.pad(x, (self.left, self.right, kh - 1, 0))
        return F.conv2d(x, self.folded_weight(), self.bias)


class WNLinear(nn.Module):
    """Weight-normalised linear layer over the last dimension."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        lin = nn.Linear(in_features, out_features, bias=bias)
        self.in_features = in_features
        self.out_features = out_features
        self.weight_v = nn.Parameter(lin.weight.detach().clone())
        self.weight_g = nn.Parameter(_norm_per_output(lin.weight.detach()).clone())
        if bias:
            self.bias = nn.Parameter(lin.bias.detach().clone())
        else:
            self.register_parameter("bias", None)

    def folded_weight(self) -> torch.Tensor:
        """The plain (out_features, in_features) weight."""
        return self.weight_v * (self.weight_g / _norm_per_output(self.weight_v).clamp_min(1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.folded_weight(), self.bias)
