"""A layout-conditioned patch critic: does this image look like a real image *of this layout*?

The obedience loss (:mod:`msgnet.nn.obedience`) asks a fixed class reader whether a decoded object
reads as the layout's class, and a decoder can satisfy a fixed reader with texture no real image has
(measured: hatched strokes that read as the class). A critic that keeps learning cannot be satisfied
that way. This one follows pix2pix/SPADE's conditional patch discriminator: it sees the image and the
layout's one-hot map together and scores every patch, with spectral normalisation on every layer and
the hinge loss (Miyato et al. 2018), the pair that trains stably without a schedule.

Like GAN-CLS's matching-aware discriminator (Reed et al. 2016), it learns from three kinds of pairs:
a real image with its own layout (real), a decoded image with the layout it was decoded for (fake) and
a real image with a layout whose classes were changed (fake): so a real-looking digit of the wrong
class is as wrong to it as a smudge of the right one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm


class LayoutCritic(nn.Module):
    """(image (B, C, H, W) in [-1, 1], layout one-hot (B, K, H, W)) -> patch scores (B, 1, H/4, W/4)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(in_channels + num_classes, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 2 * width, 3, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 1, 3, padding=1)),
        )

    def forward(self, images: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([images, one_hot.to(images.dtype)], 1))

    def critic_loss(
        self, real: torch.Tensor, real_hot: torch.Tensor, fake: torch.Tensor, fake_hot: torch.Tensor,
        changed_hot: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The critic's hinge loss, and how often it scores a real pair above zero and both fakes below.

        ``fake`` is detached here: this term trains the critic only.
        """
        on_real = self(real, real_hot)
        on_fake = self(fake.detach(), fake_hot)
        on_mismatch = self(real, changed_hot)
        loss = F.relu(1.0 - on_real).mean() + 0.5 * (F.relu(1.0 + on_fake).mean() + F.relu(1.0 + on_mismatch).mean())
        right = torch.cat([(on_real > 0).flatten(), (on_fake < 0).flatten(), (on_mismatch < 0).flatten()])
        return loss.float(), right.float().mean().detach()

    def decoder_loss(self, fake: torch.Tensor, fake_hot: torch.Tensor) -> torch.Tensor:
        """The decoder's hinge term, with the critic's weights detached: gradients reach ``fake`` only."""
        frozen = {name: p.detach() for name, p in self.named_parameters()}
        return -functional_call(self, frozen, (fake, fake_hot)).float().mean()
