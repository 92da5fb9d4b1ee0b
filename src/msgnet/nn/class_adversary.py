"""A class adversary on code maps: a small classifier whose gradient reaches the encoder reversed.

Domain-adversarial training (Ganin & Lempitsky 2015) applied to the layout's classes: the
classifier learns to read each object's class from the quantised code maps, and the gradient
reversal layer hands the encoder the negative of that gradient, so the encoder learns codes
from which the class cannot be read. Used only together with a decoder that is told the layout
(``VQVAEConfig.layout_classes``): the class is then given to the decoder for free, and codes
that carry it too would let the decoder ignore the layout.
"""

from __future__ import annotations

import torch
from torch import nn

from msgnet.nn.obedience import object_cell_loss


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:  # type: ignore[override]
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the gradient multiplied by ``-weight`` backward."""
    return _ReverseGradient.apply(x, weight)


class ClassAdversary(nn.Module):
    """Reads the class of every object cell of the latent grid from the stacked code maps."""

    def __init__(self, in_channels: int, num_classes: int, weight: float, width: int = 64) -> None:
        super().__init__()
        self.weight = weight
        # Two 3x3 convolutions: a receptive field of 5x5 cells, an object's extent on the latent grid.
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, codes: torch.Tensor, cell_classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``codes`` (B, C, h, w), ``cell_classes`` (B, h, w) -> (loss, accuracy) on object cells.

        The loss trains the classifier; through the reversal it trains the encoder against it.
        """
        return object_cell_loss(self.net(reverse_gradient(codes, self.weight)), cell_classes)
