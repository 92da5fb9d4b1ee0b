"""An obedience loss: the decoder, given real codes and a layout whose classes were changed, must draw
objects that a class reader trained on real images reads as the *layout's* classes.

Codes of a real image carry its objects' classes (a digit's shape is its class), so a decoder that is
told the layout can still ignore it and draw what the codes spell. Removing the class from the codes
(an adversary, random code replacement) empties them: measured, they collapse to one code and the
decoder draws one blurry digit per class. This loss leaves the codes alone and teaches the decoder
the rule instead: where codes and layout disagree, the layout's class wins, drawn in the codes' style.

The reader is a small convolutional network that reads each latent cell's class from an image. It
learns from real images only (their own layouts), like the auxiliary classifier of AC-GAN; the
decoder's term reads the decoded images through the reader's weights detached, so the decoder cannot
move the reader to agree with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def object_cell_loss(logits: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy of (B, K, h, w) ``logits`` on the object cells (class > 0) of ``cells``."""
    objects = cells > 0
    if not bool(objects.any()):
        zero = logits.sum() * 0.0  # keeps the graph (DDP) without a contribution
        return zero, zero.detach()
    picked = logits.float().permute(0, 2, 3, 1)[objects]
    target = cells[objects]
    return F.cross_entropy(picked, target), (picked.argmax(1) == target).float().mean().detach()


class ClassReader(nn.Module):
    """Image (B, C, H, W) in [-1, 1] -> class logits (B, K, h, w) on the latent grid (``downsamples`` halvings)."""

    def __init__(self, in_channels: int, num_classes: int, downsamples: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(downsamples):
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.ReLU()]
            channels = width
        # Two more 3x3 layers: a digit spans two to three cells of an 8x8 grid, its class needs them all.
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                   nn.ReLU(), nn.Conv2d(width, num_classes, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def read_frozen(self, images: torch.Tensor) -> torch.Tensor:
        """The same reading, with the reader's weights detached: gradients reach ``images`` only."""
        frozen = {name: p.detach() for name, p in self.named_parameters()}
        return functional_call(self, frozen, (images,))
