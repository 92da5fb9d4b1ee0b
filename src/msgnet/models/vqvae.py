"""Double-path VQ-VAE (paper §3, Fig. 2 and 21, Table 4).

Architecture (``n = config.num_downsamples``, ``h = config.hidden_dim``)::

    x in [0,1] --(x*2-1)--> stem: Conv4x4/2 (in -> h/2), ReLU          [shared, size S/2]
      attention path a                      convolutional path c
      [SelfAttn if S/2 < attention_below]
      n-1 x: Conv4x4/2, ReLU, [SelfAttn]    n-1 x: Conv4x4/2(cat(c, a)), ReLU
      Conv3x3 -> ResStack -> Conv1x1        Conv3x3(cat(c, a)) -> ResStack -> Conv1x1
      VQ1 (codes_attn)                      VQ2 (codes_conv)
    decoder, from the quantised maps qa, qc:
      Conv3x3(qa) -> ResStack               Conv3x3(cat(qc, qa)) -> ResStack
      n-1 x: [SelfAttn], ConvT4x4/2, ReLU   n-1 x: ConvT4x4/2(cat(c, a)), ReLU
      [SelfAttn]
                 ConvT4x4/2(cat(c, a)) -> out  --(y/2+0.5)--> image space

The attention path feeds the convolutional path by concatenation at every resolution
in encoder and decoder ("concatenating the output of the self-attention module to the
normal path helps in minimizing the reconstruction error"). Self-attention is placed
only on maps smaller than ``attention_below`` per side, after the strided
convolutions in the encoder and at the same resolutions in the decoder.

Images live in [0,1]; the network works in [-1,1] internally, and every output
(``reconstruction``, :meth:`decode_indices`) is in image space. The reconstruction
loss is the MSE in the internal [-1,1] space (4x the image-space MSE).

A decoder told the layout (``config.layout_classes``, beyond the paper): both decoder paths
receive the full-size layout at every resolution as a per-class scale and shift of their
features (:class:`~msgnet.nn.class_modulation.ClassModulation`, zero at step 0, so the variant
starts as the paper's decoder). Training can then keep the class out of the codes (random code
replacement, a class adversary, FSQ's bounded alphabet), so that the layout decides what is drawn.

Per-path contributions (Fig. 3): :meth:`decode_contributions` decodes with the other
path's quantised vectors replaced by zeros, so what remains is what one codebook
alone tells the decoder (biases included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msgnet.config import VQVAEConfig
from msgnet.models.pretrained import PretrainedMixin
from msgnet.models.vqvae_layout_terms import changed_class_terms
from msgnet.layouts.resize import downsample_layout
from msgnet.nn.class_adversary import ClassAdversary
from msgnet.nn.class_modulation import ClassModulation, layout_one_hot
from msgnet.nn.fsq import FiniteScalarQuantizer
from msgnet.nn.layout_critic import LayoutCritic
from msgnet.nn.obedience import ClassReader
from msgnet.nn.quantizer import VectorQuantizer
from msgnet.nn.residual import ResidualStack
from msgnet.nn.self_attention import SelfAttention2d


@dataclass
class VQVAEOutput:
    """What :meth:`DoublePathVQVAE.forward` returns. Pairs are (self-attention path, conv path)."""

    reconstruction: torch.Tensor  # (B, C, H, W) image space, not clamped
    loss: torch.Tensor  # reconstruction + codebook + commitment
    reconstruction_loss: torch.Tensor  # MSE in the model's [-1, 1] space
    codebook_loss: torch.Tensor  # summed over both codebooks
    commitment_loss: torch.Tensor  # summed over both codebooks, includes beta
    indices: tuple[torch.Tensor, torch.Tensor]  # (B, h, w) each
    perplexities: tuple[torch.Tensor, torch.Tensor]
    counts: tuple[torch.Tensor, torch.Tensor]  # (K,) code histograms of this batch
    auxiliary_loss: torch.Tensor | None = None  # the class adversary's and the obedience loss (in ``loss``)
    adversary_accuracy: torch.Tensor | None = None  # how often it read an object cell's class
    reader_accuracy: torch.Tensor | None = None  # the obedience loss's class reader on real images
    obedience_accuracy: torch.Tensor | None = None  # ... on real codes decoded under changed classes
    critic_accuracy: torch.Tensor | None = None  # the layout critic's pairs scored on the right side


def _maybe_attention(channels: int, size: int, below: int) -> nn.Module:
    return SelfAttention2d(channels) if size < below else nn.Identity()


def make_quantizer(config: VQVAEConfig) -> nn.Module:
    """The quantiser ``config.quantizer`` names: learned codebook (the paper's) or FSQ's fixed grid."""
    if config.quantizer == "fsq":
        return FiniteScalarQuantizer(config.fsq_level_list, config.embedding_dim)
    return VectorQuantizer(config.num_embeddings, config.embedding_dim, config.commitment)


class DoublePathVQVAE(PretrainedMixin, nn.Module):
    """Double-path VQ-VAE built from :class:`~msgnet.config.VQVAEConfig` alone."""

    kind = "vqvae"
    config_class = VQVAEConfig
    # Trains faster in NHWC (msgnet.training.acceleration; benchmarks/training_speed.py).
    preferred_memory_format = torch.channels_last

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c_in, h, n = config.in_channels, config.hidden_dim, config.num_downsamples
        h2 = max(h // 2, 1)
        below = config.attention_below
        # Feature-map side after the stem and after every further downsampling.
        sizes = [config.image_size // 2 ** max(i, 1) for i in range(max(n, 1))] if n else [config.image_size]
        # ---- encoder --------------------------------------------------------------
        self.stem = (
            nn.Conv2d(c_in, h2, 4, stride=2, padding=1) if n else nn.Conv2d(c_in, h2, 3, padding=1)
        )
        self.enc_attn = nn.ModuleList([_maybe_attention(h2, sizes[0], below)])
        self.enc_down_a = nn.ModuleList()
        self.enc_down_c = nn.ModuleList()
        width = h2
        for i in range(1, n):
            self.enc_down_a.append(nn.Conv2d(width, h, 4, stride=2, padding=1))
            self.enc_down_c.append(nn.Conv2d(2 * width, h, 4, stride=2, padding=1))
            width = h
            self.enc_attn.append(_maybe_attention(h, config.image_size >> (i + 1), below))
        self.enc_out_a = nn.Sequential(
            nn.Conv2d(width, h, 3, padding=1),
            ResidualStack(h, config.residual_dim, config.num_residual_blocks),
            nn.Conv2d(h, config.embedding_dim, 1),
        )
        self.enc_out_c = nn.Sequential(
            nn.Conv2d(2 * width, h, 3, padding=1),
            ResidualStack(h, config.residual_dim, config.num_residual_blocks),
            nn.Conv2d(h, config.embedding_dim, 1),
        )
        self.quantizer_attn = make_quantizer(config)
        self.quantizer_conv = make_quantizer(config)
        # ---- decoder --------------------------------------------------------------
        d = config.embedding_dim
        self.dec_in_a = nn.Sequential(
            nn.Conv2d(d, h, 3, padding=1), ResidualStack(h, config.residual_dim, config.num_residual_blocks)
        )
        self.dec_in_c = nn.Sequential(
            nn.Conv2d(2 * d, h, 3, padding=1), ResidualStack(h, config.residual_dim, config.num_residual_blocks)
        )
        self.dec_attn = nn.ModuleList()
        self.dec_up_a = nn.ModuleList()
        self.dec_up_c = nn.ModuleList()
        width = h
        for i in range(n - 1, 0, -1):  # from the latent up to S/2
            size = config.image_size >> (i + 1)
            self.dec_attn.append(_maybe_attention(width, size, below))
            out = h2 if i == 1 else h
            self.dec_up_a.append(nn.ConvTranspose2d(width, out, 4, stride=2, padding=1))
            self.dec_up_c.append(nn.ConvTranspose2d(2 * width, out, 4, stride=2, padding=1))
            width = out
        self.dec_attn.append(_maybe_attention(width, sizes[0] if n else config.image_size, below))
        self.head = (
            nn.ConvTranspose2d(2 * width, c_in, 4, stride=2, padding=1)
            if n
            else nn.Conv2d(2 * width, c_in, 3, padding=1)
        )
        self._build_layout_parts(config, [h] + [h2 if i == 1 else h for i in range(n - 1, 0, -1)])

    def _build_layout_parts(self, config: VQVAEConfig, decoder_widths: list[int]) -> None:
        """Modulation of both decoder paths at every resolution, the class adversary, the obedience
        loss's class reader and the layout critic (training-only parts, saved with the weights).

        Built only when the config asks, so a paper model has exactly the paper's parameters.
        """
        k = config.layout_classes
        self.modulation_a = nn.ModuleList(ClassModulation(k, w) for w in decoder_widths) if k else None
        self.modulation_c = nn.ModuleList(ClassModulation(k, w) for w in decoder_widths) if k else None
        self.class_adversary = (
            ClassAdversary(2 * config.embedding_dim, k, config.class_adversary) if config.class_adversary > 0 else None
        )
        # With ``obedience_realism`` the reader has one class more: "decoded under changed classes".
        reader_classes = k + 1 if config.obedience_realism else k
        self.class_reader = (
            ClassReader(config.in_channels, reader_classes, config.num_downsamples, blur=config.reader_blur)
            if config.obedience > 0 else None
        )
        self.layout_critic = (
            LayoutCritic(config.in_channels, k, config.layout_critic_width) if config.layout_critic > 0 else None
        )

    @property
    def told_layout(self) -> bool:
        """Whether the decoder reads the layout (then every decode needs it)."""
        return self.config.layout_classes > 0

    # ---- encoder ----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous encoder outputs (before quantisation) of both paths: (B, D, h, w) each."""
        self._check_image(x)
        s = F.relu(self.stem(x * 2.0 - 1.0))
        a = self.enc_attn[0](s)
        c = s
        for down_a, down_c, attn in zip(self.enc_down_a, self.enc_down_c, self.enc_attn[1:]):
            a, c = attn(F.relu(down_a(a))), F.relu(down_c(torch.cat([c, a], 1)))
        return self.enc_out_a(a), self.enc_out_c(torch.cat([c, a], 1))

    def encode_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [0,1] -> (codes_attn, codes_conv), LongTensor (B, h, w) each."""
        za, zc = self.encode(x)
        return self.quantizer_attn.indices(za), self.quantizer_conv.indices(zc)

    # ---- decoder ----------------------------------------------------------------------
    def decode(self, qa: torch.Tensor, qc: torch.Tensor, layout: torch.Tensor | None = None) -> torch.Tensor:
        """Quantised maps (and the full-size layout (B, H, W), for a decoder told it) -> output in
        the model's [-1, 1] space (not clamped)."""
        one_hot = self._layout_one_hot(layout)
        a = self.dec_in_a(qa)
        c = self.dec_in_c(torch.cat([qc, qa], 1))
        a, c = self._modulate(0, a, c, one_hot)
        for i, (attn, up_a, up_c) in enumerate(zip(self.dec_attn, self.dec_up_a, self.dec_up_c)):
            a = attn(a)
            a, c = F.relu(up_a(a)), F.relu(up_c(torch.cat([c, a], 1)))
            a, c = self._modulate(i + 1, a, c, one_hot)
        a = self.dec_attn[-1](a)
        return self.head(torch.cat([c, a], 1))

    def _layout_one_hot(self, layout: torch.Tensor | None) -> torch.Tensor | None:
        if not self.told_layout:
            return None
        size = (self.config.image_size, self.config.image_size)
        if layout is None or layout.dim() != 3 or tuple(layout.shape[-2:]) != size:
            got = None if layout is None else tuple(layout.shape)
            raise ValueError(f"this decoder is told the layout: expected layouts (B, {size[0]}, {size[1]}), got {got}")
        return layout_one_hot(layout, self.config.layout_classes)

    def _modulate(
        self, level: int, a: torch.Tensor, c: torch.Tensor, one_hot: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if one_hot is None or self.modulation_a is None or self.modulation_c is None:
            return a, c
        return self.modulation_a[level](a, one_hot), self.modulation_c[level](c, one_hot)

    def decode_indices(
        self, codes_attn: torch.Tensor, codes_conv: torch.Tensor, layout: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, h, w) code maps of both paths (and the full-size layout, for a decoder told it)
        -> images (B, C, H, W) in [0, 1]."""
        qa, qc = self._lookup(codes_attn, codes_conv)
        return self._to_image(self.decode(qa, qc, layout))

    def decode_contributions(
        self, codes_attn: torch.Tensor, codes_conv: torch.Tensor, layout: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fig. 3: (self-attention path alone, conv path alone), images in [0, 1].

        Each is decoded with the other path's quantised vectors set to zero.
        """
        qa, qc = self._lookup(codes_attn, codes_conv)
        attn_only = self._to_image(self.decode(qa, torch.zeros_like(qc), layout))
        conv_only = self._to_image(self.decode(torch.zeros_like(qa), qc, layout))
        return attn_only, conv_only

    @torch.no_grad()
    def decoder_attention_map(
        self, codes_attn: torch.Tensor, codes_conv: torch.Tensor, pixel: tuple[int, int],
        layout: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fig. 4: attention of the last decoder self-attention layer for ``pixel`` (row, col).

        ``pixel`` is in image coordinates and is mapped to that layer's grid. Returns
        (B, h', w') at the layer's resolution (sums to 1 over positions).
        """
        layers = [m for m in self.dec_attn if isinstance(m, SelfAttention2d)]
        if not layers:
            raise ValueError(
                f"this model has no decoder self-attention layer (attention_below="
                f"{self.config.attention_below})"
            )
        last = layers[-1]
        captured: list[torch.Tensor] = []
        handle = last.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))
        try:
            qa, qc = self._lookup(codes_attn, codes_conv)
            self.decode(qa, qc, layout)
        finally:
            handle.remove()
        feat = captured[-1]
        scale = self.config.image_size / feat.shape[-1]
        row, col = int(pixel[0] / scale), int(pixel[1] / scale)
        return last.attention_map(feat, (row, col))

    # ---- training ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, layout: torch.Tensor | None = None) -> VQVAEOutput:
        """Encode, quantise, decode. ``layout`` (B, H, W): the images' layouts, for a decoder told it."""
        za, zc = self.encode(x)
        oa, oc = self.quantizer_attn(za), self.quantizer_conv(zc)
        qa, qc = self._replace_codes(oa.quantized, oc.quantized)
        y = self.decode(qa, qc, layout)
        recon_loss = F.mse_loss(y, x * 2.0 - 1.0)
        codebook = oa.codebook_loss + oc.codebook_loss
        commitment = oa.commitment_loss + oc.commitment_loss
        adversary_loss, adversary_accuracy = self._adversary(oa.quantized, oc.quantized, layout)
        changed = changed_class_terms(self, x, qa, qc, layout)
        auxiliary = [part for part in (adversary_loss, None if changed is None else changed.loss) if part is not None]
        auxiliary_loss = sum(auxiliary[1:], auxiliary[0]) if auxiliary else None
        loss = recon_loss + codebook + commitment
        return VQVAEOutput(
            reconstruction=y * 0.5 + 0.5,
            loss=loss if auxiliary_loss is None else loss + auxiliary_loss,
            reconstruction_loss=recon_loss,
            codebook_loss=codebook,
            commitment_loss=commitment,
            indices=(oa.indices, oc.indices),
            perplexities=(oa.perplexity, oc.perplexity),
            counts=(oa.counts, oc.counts),
            auxiliary_loss=auxiliary_loss,
            adversary_accuracy=adversary_accuracy,
            reader_accuracy=None if changed is None else changed.reader_accuracy,
            obedience_accuracy=None if changed is None else changed.obedience_accuracy,
            critic_accuracy=None if changed is None else changed.critic_accuracy,
        )

    def _replace_codes(self, qa: torch.Tensor, qc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """While training, ``code_replacement`` of the positions get random codes (both paths alike):
        where codes and layout disagree, only the layout tells the decoder what to draw."""
        share = self.config.code_replacement
        if not self.training or share <= 0:
            return qa, qc  # draws no random number: a model without replacement trains as before
        b, _, h, w = qa.shape
        mask = torch.rand(b, 1, h, w, device=qa.device) < share
        k = self.config.num_embeddings
        random_a = self.quantizer_attn.lookup(torch.randint(k, (b, h, w), device=qa.device)).detach()
        random_c = self.quantizer_conv.lookup(torch.randint(k, (b, h, w), device=qa.device)).detach()
        return torch.where(mask, random_a.to(qa.dtype), qa), torch.where(mask, random_c.to(qc.dtype), qc)

    def _adversary(
        self, qa: torch.Tensor, qc: torch.Tensor, layout: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.class_adversary is None or layout is None:
            return None, None
        cells = downsample_layout(layout, self.latent_shape, self.config.layout_classes)
        return self.class_adversary(torch.cat([qa, qc], 1), cells)

    @property
    def latent_shape(self) -> tuple[int, int]:
        s = self.config.image_size >> self.config.num_downsamples
        return s, s

    # ---- helpers ----------------------------------------------------------------------
    def _lookup(self, codes_attn: torch.Tensor, codes_conv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if codes_attn.dim() != 3 or codes_attn.shape != codes_conv.shape:
            raise ValueError("code maps must both be (B, h, w) of equal shape")
        if tuple(codes_attn.shape[1:]) != self.latent_shape:
            raise ValueError(f"code maps must be {self.latent_shape}, got {tuple(codes_attn.shape[1:])}")
        return self.quantizer_attn.lookup(codes_attn), self.quantizer_conv.lookup(codes_conv)

    def _check_image(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels or x.shape[2:] != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"expected images (B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), "
                f"got {tuple(x.shape)}"
            )

    @staticmethod
    def _to_image(y: torch.Tensor) -> torch.Tensor:
        return (y * 0.5 + 0.5).clamp(0.0, 1.0)
