"""The paper's layout-conditioned VQ-VAE baseline ("cVQ-VAE", §4): one path, decoder told the layout.

Against MSGNet's double path it differs in two things only, which is what the comparison is about:

* a **single** convolutional path and codebook (no self-attention path), and
* a decoder **conditioned on the layout**: the layout's class fractions at every decoder
  resolution (one-hot, area-averaged: the project's downsampling rule before its argmax) go
  through a 1x1 convolution and are concatenated to the features there.

Its prior is a PixelSNAIL over the H x W code map conditioned on the H x W layout; like
pre-MSGNet it needs a layout to generate (it has no layout prior). Sizes come from a preset's
VQ-VAE section (:meth:`CVQVAEConfig.from_preset`), so one preset name serves both methods.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msgnet.config import Preset, VQVAEConfig
from msgnet.errors import UsageError
from msgnet.models.pretrained import PretrainedMixin
from msgnet.models.vqvae import VQVAEOutput
from msgnet.nn.quantizer import VectorQuantizer
from msgnet.nn.residual import ResidualStack


@dataclass(frozen=True)
class CVQVAEConfig(VQVAEConfig):
    """MSGNet's VQ-VAE config plus the layout (``num_classes`` layout classes) the decoder sees.

    The single path has no self-attention: ``attention_below`` is inherited but unused. Dead codes
    are restarted like MSGNet's (``restart_dead_codes``, :mod:`msgnet.training.codebook_usage`).
    """

    num_classes: int = 11  # layout classes, background included
    layout_dim: int = 16  # channels the layout contributes at each decoder resolution

    def validate(self) -> None:
        super().validate()  # the same geometry rules as MSGNet's VQ-VAE
        if self.num_classes < 2 or self.layout_dim < 1:
            raise UsageError("cvqvae: num_classes must be at least 2 and layout_dim at least 1")

    @classmethod
    def from_preset(cls, preset: Preset) -> "CVQVAEConfig":
        """The baseline at the sizes of ``preset``'s VQ-VAE, for its layout classes."""
        return cls(**asdict(preset.vqvae), num_classes=preset.layout_prior.num_classes)


class LayoutConditionedVQVAE(PretrainedMixin, nn.Module):
    """Encoder: image -> codes. Decoder: (codes, layout) -> image. Images in [0, 1]."""

    kind = "cvqvae"
    config_class = CVQVAEConfig

    def __init__(self, config: CVQVAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c_in, h, n, k, e = (config.in_channels, config.hidden_dim, config.num_downsamples, config.num_classes,
                            config.layout_dim)
        h2 = max(h // 2, 1)
        widths = [h2] + [h] * (n - 1)  # after the stem, then after each further downsampling
        down = [nn.Conv2d(c_in, widths[0], 4, stride=2, padding=1)]
        down += [nn.Conv2d(widths[i - 1], widths[i], 4, stride=2, padding=1) for i in range(1, n)]
        self.down = nn.ModuleList(down)
        self.enc_out = nn.Sequential(nn.Conv2d(widths[-1], h, 3, padding=1),
                                     ResidualStack(h, config.residual_dim, config.num_residual_blocks),
                                     nn.Conv2d(h, config.embedding_dim, 1))
        self.quantizer = VectorQuantizer(config.num_embeddings, config.embedding_dim, config.commitment)
        # One layout embedding per decoder resolution: the latent grid, then each upsampling's input.
        self.layout_embed = nn.ModuleList(nn.Conv2d(k, e, 1) for _ in range(n + 1))
        self.dec_in = nn.Sequential(nn.Conv2d(config.embedding_dim + e, h, 3, padding=1),
                                    ResidualStack(h, config.residual_dim, config.num_residual_blocks))
        ups, width = [], h
        for i in range(n - 1, -1, -1):  # from the latent up to the image
            out = c_in if i == 0 else widths[i - 1]
            ups.append(nn.ConvTranspose2d(width + e, out, 4, stride=2, padding=1))
            width = out
        self.up = nn.ModuleList(ups)

    # ---- encoder -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> continuous latent (B, D, h, w)."""
        y = x * 2.0 - 1.0
        for conv in self.down:
            y = F.relu(conv(y))
        return self.enc_out(y)

    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> code map (B, h, w), int64."""
        z = self.encode(x)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return self.quantizer.nearest(flat).view(z.shape[0], z.shape[2], z.shape[3])

    # ---- decoder -----------------------------------------------------------------------
    def _fractions(self, layout: torch.Tensor) -> torch.Tensor:
        """(B, H, W) class map at image size -> (B, K, H, W) one-hot floats."""
        if layout.dim() != 3 or tuple(layout.shape[-2:]) != (self.config.image_size,) * 2:
            raise ValueError(f"expected layouts (B, {self.config.image_size}, {self.config.image_size}), "
                             f"got {tuple(layout.shape)}")
        return F.one_hot(layout.long().clamp(0, self.config.num_classes - 1),
                         self.config.num_classes).permute(0, 3, 1, 2).float()

    def decode(self, q: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """Quantised latent (B, D, h, w) and full-size layout (B, H, W) -> output in [-1, 1] space."""
        onehot = self._fractions(layout)

        def cond(i: int, like: torch.Tensor) -> torch.Tensor:
            frac = F.interpolate(onehot, size=like.shape[-2:], mode="area")  # class fractions per cell
            return self.layout_embed[i](frac)

        y = self.dec_in(torch.cat([q, cond(0, q)], 1))
        for i, up in enumerate(self.up):
            y = up(torch.cat([y, cond(i + 1, y)], 1))
            if i < len(self.up) - 1:
                y = F.relu(y)
        return y

    def decode_indices(self, codes: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """Code map (B, h, w) + full-size layout (B, H, W) -> images (B, C, H, W) in [0, 1]."""
        q = self.quantizer.lookup(codes)
        return (self.decode(q, layout) * 0.5 + 0.5).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, layout: torch.Tensor) -> VQVAEOutput:
        out = self.quantizer(self.encode(x))
        y = self.decode(out.quantized, layout)
        recon = F.mse_loss(y, x * 2.0 - 1.0)
        return VQVAEOutput(reconstruction=y * 0.5 + 0.5, loss=recon + out.codebook_loss + out.commitment_loss,
                           reconstruction_loss=recon, codebook_loss=out.codebook_loss,
                           commitment_loss=out.commitment_loss, indices=(out.indices,),
                           perplexities=(out.perplexity,), counts=(out.counts,))
