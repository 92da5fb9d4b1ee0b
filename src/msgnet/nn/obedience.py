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

A reader that sees every pixel can be satisfied by texture: measured, the decoder learns hatched strokes
the reader reads as the class and no independent classifier does. With ``blur`` the reader sees the image
low-passed (a Gaussian of that many pixels), real and decoded alike, so only a digit's shape can move it.
"""

from __future__ import annotations

import math

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


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` pixels, cut at 3 sigma (at least radius 1)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


class ClassReader(nn.Module):
    """Image (B, C, H, W) in [-1, 1] -> class logits (B, K, h, w) on the latent grid (``downsamples`` halvings)."""

    def __init__(self, in_channels: int, num_classes: int, downsamples: int, width: int = 32,
                 blur: float = 0.0) -> None:
        super().__init__()
        # Not persistent: the kernel follows from the config, so saved weights stay as they were.
        self.register_buffer("blur_kernel", gaussian_kernel(blur) if blur > 0 else None, persistent=False)
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
        return self.net(self.low_pass(images))

    def low_pass(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` blurred by the reader's Gaussian (each channel alone), or as they are without one."""
        kernel = self.blur_kernel
        if kernel is None:
            return images
        radius, channels = kernel.shape[0] // 2, images.shape[1]
        padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
        rows = kernel.to(images.dtype).view(1, 1, 1, -1).expand(channels, 1, 1, -1)
        blurred = F.conv2d(padded, rows, groups=channels)
        return F.conv2d(blurred, rows.transpose(2, 3), groups=channels)

    def read_frozen(self, images: torch.Tensor) -> torch.Tensor:
        """The same reading, with the reader's weights detached: gradients reach ``images`` only."""
        frozen = {name: p.detach() for name, p in self.named_parameters()}
        return functional_call(self, frozen, (images,))
