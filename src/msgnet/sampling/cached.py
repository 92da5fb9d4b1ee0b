"""Exact cached sampling of a PixelSNAIL (the Fast-PixelCNN++ idea, extended to attention).

A full forward pass per token costs O(N) passes for N tokens; here every layer's output
is computed once per position, from caches of what that layer has already seen:

- input convolution (tokens -> features, current position excluded): the convolution of
  an embedding or one-hot input is a per-tap lookup table ``T[token, tap]``. When the
  token at p is chosen, its rows of T are *scattered* into an accumulator at every
  position its kernel reaches; the feature at p is read from the accumulator.
- causal k x k convolutions (two per gated block): the output at (i, j) is split into
  the contribution of the k-1 rows above, computed for the whole row i at once in one
  big matmul when row i starts (all those inputs are known by then), plus that of the
  current row (columns j-left .. j), a small matmul per token. The inputs (after ELU)
  of the last k-1 rows live in a duplicated ring buffer, so that the rows needed are
  always one strided view.
- the condition is non-causal and is run once per batch; its projection into every
  gated block is added to the row contributions when a row starts.
- causal attention keeps keys and values of all earlier positions.
- weight normalisation is folded into plain matrices, dropout is off.

Nothing is approximated: the logits equal the full forward pass's up to float rounding
(tests check 1e-4 at every position), and with the shared inverse-CDF rule
(:mod:`msgnet.sampling.common`) the same seed gives the same tokens as
:func:`msgnet.sampling.reference.sample_reference`. (On CUDA, cuDNN convolutions run in
TF32 by default, which alone moves the *full* pass's logits by ~1e-3 on the paper-size
prior; with ``torch.backends.cudnn.allow_tf32 = False`` both agree to ~2e-6.)

The per-layer states live in :mod:`msgnet.sampling.cached_layers`.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.threads import ThreadChooser
from msgnet.sampling.cached_layers import BlockCache, PointwiseGated, folded_matrix
from msgnet.sampling.common import Randomness, plan_sampling, token_rule


class CachedSampler:
    """Step a PixelSNAIL through one batch of maps, one position at a time, exactly.

    ``logits()`` gives the logits (B, num_classes) at the current position given every
    token pushed so far; ``push(tokens)`` fixes the tokens (B,) there and moves on in
    raster order. ``tokens`` holds the (B, H, W) map built so far.
    """

    def __init__(
        self,
        model: PixelSNAIL,
        batch_size: int,
        condition: torch.Tensor | None = None,
        row_threads: int | None = None,
    ) -> None:
        # Intra-op threads for the once-per-row matmuls (None: leave the setting alone).
        # The per-token matmuls have only batch_size rows and gain little from threads
        # (and lose a lot on a busy CPU), so sample_cached runs them on ``token_threads``
        # (default 1) and gives the big row matmuls all threads.
        self.row_threads = row_threads
        with torch.inference_mode():
            self._build(model, batch_size)
            self.reset(condition)

    def _build(self, model: PixelSNAIL, batch: int) -> None:
        cfg = model.config
        self.model = model
        self.batch_size = batch
        self.height, self.width = h, w = cfg.height, cfg.width
        self.num_positions = h * w
        conv = model.input_conv
        weight = conv.folded_weight().detach()  # (C, Cin, kh, kw)
        if model.embedding is not None:
            table = torch.einsum("ve,oerc->vrco", model.embedding.weight.detach(), weight)
        else:
            table = weight.permute(1, 2, 3, 0)
        kh, kw = conv.kernel_size
        # Flipped so that the token at (i, j) adds table[tok] to acc[:, i:i+kh, j:j+kw];
        # flattened per token so that the gather is one embedding lookup.
        self.table = table.flip(1, 2).reshape(table.shape[0], -1).contiguous()  # (V, kh*kw*C)
        self.input_window = (batch, kh, kw, weight.shape[0])
        dev, dt = weight.device, weight.dtype
        self.device = dev
        self.input_bias = conv.bias.detach()
        self.acc = torch.empty(batch, h + kh - 1, w + kw - 1, weight.shape[0], device=dev, dtype=dt)
        self.read_at = [self.acc[:, p // w, p % w + conv.right] for p in range(h * w)]
        self.add_at = [self.acc[:, p // w : p // w + kh, p % w : p % w + kw] for p in range(h * w)]
        background = model.background[0].permute(1, 2, 0).reshape(h * w, 2).to(dev, dt)
        scratch: dict = {}
        self.blocks = [BlockCache(b, batch, h, w, background, scratch) for b in model.blocks]
        self.out_blocks = [PointwiseGated(b) for b in model.out_blocks]
        self.w_out = folded_matrix(model.out_conv)
        self.b_out = model.out_conv.bias.detach()
        self.tokens_flat = torch.zeros(batch, h * w, dtype=torch.long, device=dev)
        self.cond_rows: torch.Tensor | None = None

    @property
    def tokens(self) -> torch.Tensor:
        return self.tokens_flat.view(self.batch_size, self.height, self.width)

    @property
    def position(self) -> int:
        """Index in raster order of the next token to be pushed."""
        return self._p

    @torch.inference_mode()
    def reset(self, condition: torch.Tensor | None = None) -> None:
        """Start a new batch of maps (with its (B, H, W) condition for a conditional prior)."""
        model = self.model
        if condition is not None and condition.shape[0] != self.batch_size:
            raise ValueError(f"condition has {condition.shape[0]} maps for a batch of {self.batch_size}")
        was_training = model.training
        model.eval()
        try:
            cond = model.condition_features(None if condition is None else condition.to(self.device))
        finally:
            model.train(was_training)
        # (H, B*W, Dc): one contiguous matrix per row, written into the same buffer every batch so
        # that captured CUDA graphs (msgnet.sampling.graphed) read this batch's condition.
        if cond is None:
            self.cond_rows = None
        else:
            rows = cond.permute(2, 0, 3, 1).reshape(self.height, self.batch_size * self.width, -1)
            if self.cond_rows is None or self.cond_rows.shape != rows.shape:
                self.cond_rows = rows.contiguous()
            else:
                self.cond_rows.copy_(rows)
        self.acc.copy_(self.input_bias.expand_as(self.acc))
        if self.model.position is not None:  # what the full pass adds after the input convolution
            right = self.model.input_conv.right
            self.acc[:, : self.height, right : right + self.width] += self.model.position.detach()[0].permute(1, 2, 0)
        self.tokens_flat.zero_()
        for block in self.blocks:
            block.reset()
        self._p = 0
        self._features: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None
        self._begin_row(0)

    def _begin_row(self, i: int) -> None:
        cond_row = None if self.cond_rows is None else self.cond_rows[i]
        previous = torch.get_num_threads()
        if self.row_threads is not None and self.row_threads != previous:
            torch.set_num_threads(self.row_threads)
        try:
            for block in self.blocks:
                block.begin_row(i, cond_row)
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)

    def _run_features(self) -> torch.Tensor:
        if self._features is None:
            p = self._p
            j = p % self.width
            x = self.read_at[p]
            for block in self.blocks:
                x = block.step(x, p, j)
            self._features = x
        return self._features

    @torch.inference_mode()
    def logits(self) -> torch.Tensor:
        """Logits (B, num_classes) of the token at :attr:`position`."""
        if self._p >= self.num_positions:
            raise IndexError("the map is complete")
        if self._logits is None:
            x = self._run_features()
            for block in self.out_blocks:
                x = block(x)
            self._logits = torch.addmm(self.b_out, F.elu(x), self.w_out)
        return self._logits

    @torch.inference_mode()
    def push(self, tokens: torch.Tensor) -> None:
        """Fix the tokens (B,) at :attr:`position` and advance to the next position."""
        p = self._p
        if p >= self.num_positions:
            raise IndexError("the map is complete")
        self._run_features()  # the layer caches must hold position p before moving on
        tokens = tokens.to(self.device, torch.long)
        self.tokens_flat[:, p] = tokens
        self.add_at[p].add_(F.embedding(tokens, self.table).view(self.input_window))
        self._p = p + 1
        self._features = None
        self._logits = None
        if self._p % self.width == 0:
            i = p // self.width
            for block in self.blocks:
                block.end_row(i)
            if i + 1 < self.height:
                self._begin_row(i + 1)


def _probe_span(width: int) -> int:
    """Tokens timed per candidate thread count at each probe (0 = no probing)."""
    k = min(8, (width - 2) // 2)
    return k if k >= 2 else 0


REPROBE_ROWS = 4  # probe again every this many rows: the load on a shared CPU changes mid-batch


def sample_cached(
    model: PixelSNAIL,
    num: int,
    condition: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: Randomness = None,
    batch_size: int = 16,
    threads: int | None = None,
    token_threads: int | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Sample ``num`` token maps (num, H, W) exactly as :func:`sample_reference` would, fast.

    ``condition``: (num, H, W), (1, H, W) or (H, W) class map for a conditional prior.
    ``top_k``, ``top_p``, ``guidance``: see :mod:`msgnet.sampling.rule` (guided, the sampler runs
    twice the batch: the maps with their layouts and with "no layout").
    Uses the model's device and dtype; the model is not modified.

    CPU threads: the per-row matmuls run on ``threads`` (default:
    ``torch.get_num_threads()``), the per-token work on ``token_threads``. Per-token
    matmuls have only ``batch_size`` rows: on an idle CPU two threads gain 10-30%, on a
    CPU shared with other processes they can be many times slower than one. With
    ``token_threads=None`` a few tokens are timed with one thread and with ``threads`` at
    the start of every batch and again every ``REPROBE_ROWS`` rows, and the faster is kept
    until the next probe. The setting is restored on return.
    """
    rule = token_rule(temperature, top_k, top_p, guidance)
    plan = plan_sampling(model, num, condition, rule, generator, batch_size)
    h, w, u = plan.height, plan.width, plan.uniforms
    result = plan.empty_result()
    sampler: CachedSampler | None = None
    previous = torch.get_num_threads()
    row_threads = threads if threads is not None else previous
    on_cpu = next(model.parameters()).device.type == "cpu"
    candidates = [1] if token_threads is None else [token_threads]
    if token_threads is None and row_threads > 1:
        candidates.append(row_threads)
    span = _probe_span(w) if on_cpu and len(candidates) > 1 else 0
    chooser = ThreadChooser(candidates, span, REPROBE_ROWS * w)
    try:
        if on_cpu:
            torch.set_num_threads(candidates[0])
        with torch.inference_mode():
            for start, stop in plan.batches():
                cond = plan.condition_of(start, stop)
                if sampler is None or sampler.batch_size != plan.sampler_batch(start, stop):
                    sampler = CachedSampler(model, plan.sampler_batch(start, stop), cond,
                                            row_threads if on_cpu else None)
                else:
                    sampler.reset(cond)
                u_batch = u[start:stop].reshape(stop - start, h * w).to(sampler.device)
                for p in range(h * w):
                    timed = chooser.before(p)
                    tick = time.perf_counter()
                    sampler.push(rule.for_sampler(rule.pick(sampler.logits(), u_batch[:, p])))
                    if timed:
                        chooser.after(p, time.perf_counter() - tick)
                result[start:stop] = sampler.tokens[: stop - start].cpu()
    finally:
        torch.set_num_threads(previous)
    return result
