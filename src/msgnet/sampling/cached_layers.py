"""Per-layer incremental state of the cached sampler (:mod:`msgnet.sampling.cached`).

Each class mirrors one module of :mod:`msgnet.models.pixelsnail` with its weight
normalisation folded into plain (in, out) matrices, and evaluates it one position at a
time from caches of what it has already seen. See ``cached.py`` for the scheme.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from msgnet.models.pixelsnail import PixelBlock
from msgnet.nn.causal import CausalConv2d, WNConv2d
from msgnet.nn.gated import GatedResBlock


# ELU written straight into a cache slot (no temporary); torch.nn.functional has no out=.
_ELU_OUT = getattr(getattr(torch._C, "_nn", None), "elu", None)


def elu_into(x: torch.Tensor, out: torch.Tensor) -> None:
    """out[...] = elu(x)."""
    if _ELU_OUT is not None:
        _ELU_OUT(x, out=out)
    else:  # pragma: no cover - other torch builds
        out.copy_(F.elu(x))


def folded_matrix(conv: WNConv2d) -> torch.Tensor:
    """(in, out) matrix of a folded 1x1 convolution."""
    return conv.folded_weight().detach()[:, :, 0, 0].t().contiguous()


class ConvCache:
    """Incremental state of one :class:`CausalConv2d` that includes the current position."""

    def __init__(self, conv: CausalConv2d, batch: int, height: int, width: int, scratch: dict) -> None:
        w = conv.folded_weight().detach()  # (out, C, kh, kw)
        out_ch, in_ch, kh, kw = w.shape
        dev, dt = w.device, w.dtype
        taps = conv.current_row_taps
        wt = w.permute(2, 3, 1, 0)  # (kh, kw, C, out): raster order of taps, then channels
        self.m = kh - 1  # rows above the current one
        self.kw, self.in_ch, self.out_ch = kw, in_ch, out_ch
        self.batch, self.width = batch, width
        self.w_top = wt[: self.m].reshape(self.m * kw * in_ch, out_ch).contiguous()
        self.w_cur = wt[self.m, :taps].reshape(taps * in_ch, out_ch).contiguous()
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out_ch, device=dev, dtype=dt)
        self.bias = bias.contiguous()
        self.padded_width = width + conv.left + conv.right
        # Current row of (activated) inputs, zero in the padding columns.
        self.cur = torch.zeros(batch, self.padded_width, in_ch, device=dev, dtype=dt)
        # Rows above, each stored twice (slots r % m and r % m + m) so the last m rows are
        # always contiguous slots a .. a+m-1.
        self.hist = torch.zeros(batch, 2 * max(self.m, 1), self.padded_width, in_ch, device=dev, dtype=dt)
        self.top = torch.empty(batch, width, out_ch, device=dev, dtype=dt)
        # Unfolded windows of the rows above: scratch space shared by all convs of one shape.
        shape = (batch, width, max(self.m, 1), kw, in_ch)
        if shape not in scratch:
            scratch[shape] = torch.empty(shape, device=dev, dtype=dt)
        self.unfolded = scratch[shape]
        left = conv.left
        self.write_at = [self.cur[:, j + left] for j in range(width)]
        self.window_at = [
            self.cur[:, j + left + 1 - taps : j + left + 1].reshape(batch, taps * in_ch)
            for j in range(width)
        ]
        self.top_at = [self.top[:, j] for j in range(width)]

    def reset(self) -> None:
        self.cur.zero_()
        self.hist.zero_()

    def begin_row(self, i: int, extra: torch.Tensor | None = None) -> None:
        """Contribution of rows i-m .. i-1 (plus bias and ``extra``) to every output of row i."""
        top = self.top.view(self.batch * self.width, self.out_ch)
        if self.m:
            c, wp = self.in_ch, self.padded_width
            h = self.hist
            windows = h.as_strided(
                (self.batch, self.width, self.m, self.kw, c),
                (h.stride(0), c, wp * c, c, 1),
                h.storage_offset() + (i % self.m) * wp * c,
            )
            self.unfolded.copy_(windows)
            x = self.unfolded.view(self.batch * self.width, -1)
            torch.addmm(self.bias, x, self.w_top, out=top)
        else:
            top.copy_(self.bias.expand_as(top))
        if extra is not None:
            top.add_(extra)

    def end_row(self, i: int) -> None:
        if self.m:
            s = i % self.m
            self.hist[:, s].copy_(self.cur)
            self.hist[:, s + self.m].copy_(self.cur)

    def output(self, j: int) -> torch.Tensor:
        return torch.addmm(self.top_at[j], self.window_at[j], self.w_cur)


class CausalGatedCache:
    """A k x k causal :class:`GatedResBlock` evaluated one position at a time."""

    def __init__(self, block: GatedResBlock, batch: int, height: int, width: int, scratch: dict) -> None:
        assert isinstance(block.conv1, CausalConv2d) and isinstance(block.conv2, CausalConv2d)
        self.conv1 = ConvCache(block.conv1, batch, height, width, scratch)
        self.conv2 = ConvCache(block.conv2, batch, height, width, scratch)
        self.channels = block.in_channels
        self.w_cond = folded_matrix(block.condition) if block.condition is not None else None

    def reset(self) -> None:
        self.conv1.reset()
        self.conv2.reset()

    def begin_row(self, i: int, cond_row: torch.Tensor | None) -> None:
        self.conv1.begin_row(i)
        extra = None
        if self.w_cond is not None and cond_row is not None:
            extra = cond_row @ self.w_cond
        self.conv2.begin_row(i, extra)

    def end_row(self, i: int) -> None:
        self.conv1.end_row(i)
        self.conv2.end_row(i)

    def step(self, x: torch.Tensor, j: int) -> torch.Tensor:
        c1, c2 = self.conv1, self.conv2
        elu_into(x, c1.write_at[j])
        h = torch.addmm(c1.top_at[j], c1.window_at[j], c1.w_cur)
        elu_into(h, c2.write_at[j])
        g = torch.addmm(c2.top_at[j], c2.window_at[j], c2.w_cur)
        a, b = g.split(self.channels, dim=1)
        return torch.addcmul(x, a, torch.sigmoid(b))


class PointwiseGated:
    """A 1x1 :class:`GatedResBlock` (with optional auxiliary input) on (B, C) vectors."""

    def __init__(self, block: GatedResBlock) -> None:
        self.w1 = folded_matrix(block.conv1)
        self.b1 = block.conv1.bias.detach().clone()
        self.w2 = folded_matrix(block.conv2)
        self.b2 = block.conv2.bias.detach()
        self.wa = None
        if block.aux_conv is not None:
            self.wa = folded_matrix(block.aux_conv)
            self.b1 += block.aux_conv.bias.detach()
        self.channels = block.in_channels

    def __call__(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.addmm(self.b1, F.elu(x), self.w1)
        if self.wa is not None:
            h.addmm_(F.elu(aux), self.wa)
        g = torch.addmm(self.b2, F.elu(h), self.w2)
        a, b = g.split(self.channels, dim=1)
        return torch.addcmul(x, a, torch.sigmoid(b))


class BlockCache:
    """One :class:`PixelBlock`: its gated blocks' caches and the attention key/value cache."""

    def __init__(
        self, block: PixelBlock, batch: int, height: int, width: int, background: torch.Tensor, scratch: dict
    ) -> None:
        self.gated = [CausalGatedCache(g, batch, height, width, scratch) for g in block.res_blocks]
        n = height * width
        self.bg_at = [background[p].expand(batch, -1) for p in range(n)]
        self.attention = block.attention
        if block.attention:
            att = block.causal_attention
            self.key_block = PointwiseGated(block.key_block)
            self.query_block = PointwiseGated(block.query_block)
            self.out_block = PointwiseGated(block.out_block)
            self.heads, self.head_dim, self.dim = att.num_heads, att.head_dim, att.attention_dim
            self.w_q = att.query.folded_weight().detach().t().contiguous()
            self.b_q = att.query.bias.detach()
            self.w_kv = torch.cat([att.key.folded_weight(), att.value.folded_weight()]).detach().t().contiguous()
            self.b_kv = torch.cat([att.key.bias, att.value.bias]).detach()
            dev, dt = self.w_q.device, self.w_q.dtype
            # (2, B, heads, N, head_dim): keys then values, one copy per position.
            self.kv = torch.empty(2, batch, self.heads, n, self.head_dim, device=dev, dtype=dt)
            self.kv_at = [self.kv[:, :, :, p] for p in range(n)]
            self.k_upto = [self.kv[0, :, :, : p + 1] for p in range(n)]
            self.v_upto = [self.kv[1, :, :, : p + 1] for p in range(n)]
            self.batch = batch
        else:
            self.w_out = folded_matrix(block.out)
            self.b_out = block.out.bias.detach()

    def reset(self) -> None:
        for g in self.gated:
            g.reset()

    def begin_row(self, i: int, cond_row: torch.Tensor | None) -> None:
        for g in self.gated:
            g.begin_row(i, cond_row)

    def end_row(self, i: int) -> None:
        for g in self.gated:
            g.end_row(i)

    def step(self, x: torch.Tensor, p: int, j: int) -> torch.Tensor:
        out = x
        for g in self.gated:
            out = g.step(out, j)
        bg = self.bg_at[p]
        if not self.attention:
            return torch.addmm(self.b_out, torch.cat([out, bg], 1), self.w_out)
        key = self.key_block(torch.cat([x, out, bg], 1))
        query = self.query_block(torch.cat([out, bg], 1))
        kv = torch.addmm(self.b_kv, key, self.w_kv)
        b = self.batch
        self.kv_at[p].copy_(kv.view(b, 2, self.heads, self.head_dim).transpose(0, 1))
        q = torch.addmm(self.b_q, query, self.w_q).view(b, self.heads, 1, self.head_dim)
        attended = F.scaled_dot_product_attention(q, self.k_upto[p], self.v_upto[p])
        return self.out_block(out, attended.reshape(b, self.dim))
