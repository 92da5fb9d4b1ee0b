"""PixelSNAIL prior over a map of tokens, optionally conditioned on a class-index map.

Architecture (reference PixelSNAIL, paper Tables 5/6), for an H x W map of tokens:

- input: embedding (``embedding_dim > 0``) or one-hot of the tokens, then one causal
  convolution that excludes the current position (kernel (k//2 + 1) x k, the union of
  the reference's down-shifted and down-right-shifted stacks);
- ``num_blocks`` blocks, each ``num_res_blocks`` causal gated residual blocks (kernel k)
  followed, if ``attention``, by causal multi-head self-attention whose keys see the
  block input, the block output and two coordinate channels;
- ``num_out_res_blocks`` 1x1 gated blocks, ELU, a 1x1 convolution to the logits.

Every feature map after the input convolution is *shifted*: its value at position p
depends on tokens before p only. All later layers may therefore read position p itself,
which keeps the cached sampler (``msgnet.sampling.cached``) exact and simple.

The condition (a class-index map of the same H x W) is embedded, passed through a
non-causal residual stack and added inside every causal gated block. With
``condition_dropout > 0`` the embedding has one more row, the learned "no layout" class: a
map filled with it (:meth:`PixelSNAIL.null_condition`) asks for the codes without their
layout, which classifier-free guidance (:mod:`msgnet.sampling.rule`) contrasts with the
conditional logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msgnet.config import PixelSNAILConfig
from msgnet.models.pretrained import PretrainedMixin
from msgnet.nn.causal import CausalConv2d, WNConv2d
from msgnet.nn.causal_attention import CausalSelfAttention
from msgnet.nn.gated import GatedResBlock

CONDITION_KERNEL = 3  # the reference CondResNet's kernel; the paper gives no other value


class ConditionStack(nn.Module):
    """Non-causal: class map (B, H, W) -> embedding -> conv -> gated residual blocks."""

    def __init__(self, config: PixelSNAILConfig) -> None:
        super().__init__()
        # The "no layout" class, when the prior learns one, is the row after the real classes.
        rows = config.num_condition_classes + (1 if config.guidable else 0)
        self.embedding = nn.Embedding(rows, config.condition_embedding_dim)
        self.conv = WNConv2d(
            config.condition_embedding_dim,
            config.condition_res_dim,
            CONDITION_KERNEL,
            padding=CONDITION_KERNEL // 2,
        )
        self.blocks = nn.ModuleList(
            GatedResBlock(
                config.condition_res_dim,
                config.condition_res_dim,
                CONDITION_KERNEL,
                causal=False,
                dropout=config.dropout,
            )
            for _ in range(config.condition_res_blocks)
        )

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        x = self.embedding(condition).permute(0, 3, 1, 2)
        x = self.conv(x)
        for block in self.blocks:
            x = block(x)
        return x


class PixelBlock(nn.Module):
    """Causal gated residual blocks, then causal attention (or a 1x1 mix with coordinates)."""

    def __init__(self, config: PixelSNAILConfig) -> None:
        super().__init__()
        c = config.channels
        cond = config.condition_res_dim if config.conditional else 0
        self.res_blocks = nn.ModuleList(
            GatedResBlock(
                c,
                config.res_channels,
                config.kernel_size,
                causal=True,
                dropout=config.dropout,
                condition_channels=cond,
            )
            for _ in range(config.num_res_blocks)
        )
        self.attention = config.attention
        if config.attention:
            self.key_block = GatedResBlock(2 * c + 2, c, 1, dropout=config.dropout)
            self.query_block = GatedResBlock(c + 2, c + 2, 1, dropout=config.dropout)
            self.causal_attention = CausalSelfAttention(
                c + 2, 2 * c + 2, config.attention_dim, config.attention_heads, config.dropout
            )
            self.out_block = GatedResBlock(
                c, c, 1, dropout=config.dropout, aux_channels=config.attention_dim
            )
        else:
            self.out = WNConv2d(c + 2, c, 1)

    def forward(
        self, x: torch.Tensor, background: torch.Tensor, condition: torch.Tensor | None
    ) -> torch.Tensor:
        out = x
        for block in self.res_blocks:
            out = block(out, condition=condition)
        if self.attention:
            key = self.key_block(torch.cat([x, out, background], 1))
            query = self.query_block(torch.cat([out, background], 1))
            attended = self.causal_attention(query, key)
            return self.out_block(out, aux=attended)
        return self.out(torch.cat([out, background], 1))


class PixelSNAIL(PretrainedMixin, nn.Module):
    """Autoregressive prior over a (B, H, W) LongTensor of tokens in ``range(num_classes)``.

    ``forward(tokens, condition)`` returns logits (B, num_classes, H, W); the logits at p
    depend on the tokens before p in raster order only (and on the whole condition).
    """

    kind = "pixelsnail"
    config_class = PixelSNAILConfig

    def __init__(self, config: PixelSNAILConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        k = config.kernel_size
        if config.embedding_dim > 0:
            self.embedding: nn.Embedding | None = nn.Embedding(config.num_classes, config.embedding_dim)
            in_channels = config.embedding_dim
        else:
            self.embedding = None
            in_channels = config.num_classes
        self.input_conv = CausalConv2d(
            in_channels, config.channels, (k // 2 + 1, k), include_center=False
        )
        h, w = config.height, config.width
        rows = ((torch.arange(h, dtype=torch.float32) - h / 2) / h).view(h, 1).expand(h, w)
        cols = ((torch.arange(w, dtype=torch.float32) - w / 2) / w).view(1, w).expand(h, w)
        self.register_buffer("background", torch.stack([rows, cols])[None], persistent=False)
        self.position = nn.Parameter(torch.zeros(1, config.channels, h, w)) if config.position_embedding else None
        self.blocks = nn.ModuleList(PixelBlock(config) for _ in range(config.num_blocks))
        self.condition_stack = ConditionStack(config) if config.conditional else None
        self.out_blocks = nn.ModuleList(
            GatedResBlock(config.channels, config.res_channels, 1, dropout=config.dropout)
            for _ in range(config.num_out_res_blocks)
        )
        self.out_conv = WNConv2d(config.channels, config.num_classes, 1)

    # -- inputs ---------------------------------------------------------------------
    def _check_tokens(self, tokens: torch.Tensor, what: str = "tokens") -> None:
        cfg = self.config
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (cfg.height, cfg.width):
            raise ValueError(
                f"prior: {what} must be (B, {cfg.height}, {cfg.width}), got {tuple(tokens.shape)}"
            )
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"prior: {what} must be an integer tensor, got {tokens.dtype}")

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, H, W) -> input features (B, embedding_dim or num_classes, H, W)."""
        tokens = tokens.long()
        if self.embedding is not None:
            return self.embedding(tokens).permute(0, 3, 1, 2)
        one_hot = F.one_hot(tokens, self.config.num_classes)
        return one_hot.permute(0, 3, 1, 2).to(self.background.dtype)

    def condition_features(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """Class map (B, H, W) -> (B, condition_res_dim, H, W); None when unconditional."""
        if self.condition_stack is None:
            if condition is not None:
                raise ValueError("prior: this prior is unconditional but a condition was given")
            return None
        if condition is None:
            raise ValueError("prior: this prior is conditional: a layout condition is required")
        self._check_tokens(condition, "condition")
        return self.condition_stack(condition.long())

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        """A condition of ``like``'s shape that says "no layout" (only for a guidable prior)."""
        if not self.config.guidable:
            raise ValueError("prior: trained without condition dropout, it has no unconditional input")
        return torch.full_like(like, self.config.num_condition_classes, dtype=torch.long)

    def drop_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """Training: each map's condition replaced by "no layout" with probability ``condition_dropout``.

        Draws from the global generator only when the dropout is positive, so a prior without it
        trains exactly as before (same random stream, same batches, same weights).
        """
        rate = self.config.condition_dropout
        if rate <= 0:
            return condition
        dropped = torch.rand(condition.shape[0], device=condition.device) < rate
        return torch.where(dropped.view(-1, 1, 1), self.null_condition(condition), condition.long())

    # -- model ----------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        self._check_tokens(tokens)
        cond = self.condition_features(condition)
        x = self.input_conv(self.embed(tokens))
        if self.position is not None:
            x = x + self.position
        background = self.background.expand(x.shape[0], -1, -1, -1)
        for block in self.blocks:
            x = block(x, background, cond)
        for block in self.out_blocks:
            x = block(x)
        return self.out_conv(F.elu(x))

    def loss(
        self, tokens: torch.Tensor, condition: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean negative log-likelihood in nats per token, and metrics (``bits_per_token``)."""
        logits = self(tokens, condition)
        nll = F.cross_entropy(logits, tokens.long())
        value = float(nll.detach())
        return nll, {"loss": value, "bits_per_token": value / math.log(2)}
