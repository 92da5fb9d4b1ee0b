"""The cached sampler with every position's step captured in a CUDA graph (``--sampler cuda-graph``).

On a GPU the cached sampler's per-token work is a few dozen small kernels (the B x C matmuls of
:mod:`msgnet.sampling.cached_layers`, the inverse-CDF pick): launch overhead, not arithmetic,
bounds it. Here the step of position p — logits, token pick, push (and, at a row's end, the
next row's big matmuls) — is captured once per position into a CUDA graph and replayed for every
batch, so a batch costs H x W graph launches instead of tens of thousands of kernel launches.

It stays exact: the graphs replay the very kernels the eager sampler runs on the same buffers,
the uniforms are drawn up front exactly as :func:`msgnet.sampling.cached.sample_cached` draws them
(:mod:`msgnet.sampling.common`), and the token pick is the same float64 inverse CDF, so a seed
gives the same tokens. What makes capture possible: every cache is a persistent buffer indexed
by positions known in Python, the condition is copied into one buffer per batch
(:meth:`CachedSampler.reset`), and the uniforms of a batch are copied into one static buffer.

The graphs are specific to a batch size and a token rule; a last, smaller batch runs eagerly.
CUDA only (a CPU has no launch overhead to remove).
"""

from __future__ import annotations

import torch

from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.sampling.cached import CachedSampler
from msgnet.sampling.common import Randomness, plan_sampling, token_rule
from msgnet.sampling.rule import TokenRule


class GraphedSteps:
    """One CUDA graph per position of ``sampler`` (its batch size), for the token ``rule``."""

    def __init__(self, sampler: CachedSampler, rule: TokenRule, condition: torch.Tensor | None) -> None:
        if sampler.device.type != "cuda":
            raise ValueError("the CUDA-graph sampler needs the model on a CUDA device")
        self.sampler = sampler
        self.rule = rule
        maps = sampler.batch_size // (2 if rule.guided else 1)  # guided: both halves share the uniforms
        self.u = torch.zeros(maps, sampler.num_positions, dtype=torch.float64, device=sampler.device)
        with torch.inference_mode():
            # Warm-up on a side stream (lazy cuBLAS/cuDNN initialisation must not happen inside a capture).
            side = torch.cuda.Stream(sampler.device)
            side.wait_stream(torch.cuda.current_stream(sampler.device))
            with torch.cuda.stream(side):
                sampler.reset(condition)
                for p in range(sampler.num_positions):
                    self._step(p)
            torch.cuda.current_stream(sampler.device).wait_stream(side)
            sampler.reset(condition)
            pool = torch.cuda.graph_pool_handle()  # shared: graphs replay in the order they were captured
            self.graphs = []
            for p in range(sampler.num_positions):
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self._step(p)
                self.graphs.append(graph)

    def _step(self, p: int) -> None:
        s = self.sampler
        s.push(self.rule.for_sampler(self.rule.pick(s.logits(), self.u[:, p])))

    @torch.inference_mode()
    def run(self, condition: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
        """Tokens (B, H, W) of one batch: ``condition`` as the sampler holds it or None, ``u`` (B, H*W) float64."""
        self.sampler.reset(condition)
        self.u.copy_(u)
        for graph in self.graphs:
            graph.replay()
        return self.sampler.tokens[: self.u.shape[0]].clone()


class CudaGraphSampler:
    """``sample_cached``'s signature, with the captured graphs kept for the next call.

    A sampling job calls its sampler once per batch; capturing H x W graphs costs about one eager
    batch, so one instance keeps them per (model, batch size, token rule) for the job's lifetime.
    """

    def __init__(self) -> None:
        self._graphs: dict[tuple[int, int, TokenRule], GraphedSteps] = {}

    def __call__(
        self,
        model: PixelSNAIL,
        num: int,
        condition: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: Randomness = None,
        batch_size: int = 16,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """Sample ``num`` token maps (num, H, W): the same tokens as :func:`sample_cached` for a seed."""
        rule = token_rule(temperature, top_k, top_p, guidance)
        plan = plan_sampling(model, num, condition, rule, generator, batch_size)
        h, w, u = plan.height, plan.width, plan.uniforms
        batch_size, result = plan.batch_size, plan.empty_result()
        device = next(model.parameters()).device
        with torch.inference_mode():
            for start, stop in plan.batches():
                cond = plan.condition_of(start, stop)
                cond = None if cond is None else cond.to(device)
                u_batch = u[start:stop].reshape(stop - start, h * w).to(device)
                if stop - start == batch_size:
                    key = (id(model), batch_size, rule)
                    if key not in self._graphs:
                        sampler = CachedSampler(model, plan.sampler_batch(start, stop), cond)
                        self._graphs[key] = GraphedSteps(sampler, rule, cond)
                    result[start:stop] = self._graphs[key].run(cond, u_batch).cpu()
                else:  # a last, smaller batch: not worth capturing graphs for
                    sampler = CachedSampler(model, plan.sampler_batch(start, stop), cond)
                    for p in range(h * w):
                        sampler.push(rule.for_sampler(rule.pick(sampler.logits(), u_batch[:, p])))
                    result[start:stop] = sampler.tokens[: stop - start].cpu()
        return result
