"""How a sampler turns a position's logits into a token: temperature, truncation and guidance.

Every sampler (reference, cached, CUDA-graph) calls one :class:`TokenRule`, so they agree token
for token whatever the rule is.

- **Temperature** divides the logits before the softmax.
- **Truncation** keeps the ``top_k`` most probable tokens and/or the smallest set of most probable
  tokens whose mass reaches ``top_p`` (Holtzman et al. 2020), renormalised; a token outside the kept
  set is never drawn. Both use the same uniform as plain sampling, so a seed stays a seed.
- **Guidance** (classifier-free, Ho & Salimans 2022, as LlamaGen and VAR sample): the prior runs on
  every map twice, with its layout and with the learned "no layout" condition, and the token is
  drawn from ``uncond + guidance * (cond - uncond)``. A sampler doubles its batch for it: the first
  half carries the layouts, the second the "no layout" maps, and both halves receive the same token.
  ``guidance == 1`` is plain conditional sampling and runs no unconditional half at all.

Float64 throughout the pick (logits combined in float64 too), so that samplers whose logits agree to
~1e-6 still choose the same token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def rule_problems(temperature: float | None = 1.0, top_k: int | None = None, top_p: float | None = None,
                  guidance: float | None = 1.0) -> list[tuple[str, str]]:
    """(part, what is wrong) for each value no token rule accepts: the one check of a rule's values, which
    :class:`TokenRule` raises and ``GenerationSettings.validate`` names by its fields. A None temperature
    or guidance is one left to the run (``msgnet.sampling.defaults``), checked once resolved."""
    problems = []
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):  # nan fails both
        problems.append(("temperature", f"must be a positive finite number, got {temperature}"))
    if top_k is not None and top_k < 1:
        problems.append(("top_k", f"must be at least 1, got {top_k}"))
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        problems.append(("top_p", f"must be in (0, 1], got {top_p}"))
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        problems.append(("guidance", f"must be a finite number >= 0, got {guidance}"))
    return problems


@dataclass(frozen=True)
class TokenRule:
    """The token choice at one position: ``temperature``, ``top_k`` / ``top_p`` (None: off) and ``guidance``."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance: float = 1.0

    def __post_init__(self) -> None:
        for part, problem in rule_problems(self.temperature, self.top_k, self.top_p, self.guidance):
            raise ValueError(f"sampling: {part}: {problem}")

    @property
    def guided(self) -> bool:
        """Whether the sampler must run the unconditional half (``guidance != 1``)."""
        return self.guidance != 1.0

    @property
    def truncated(self) -> bool:
        return self.top_k is not None or (self.top_p is not None and self.top_p < 1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V) logits, or (2B, V) conditional half first when guided -> (B, V) float64 probabilities after
        guidance, temperature and truncation (not renormalised)."""
        logits = logits.double()
        if self.guided:
            cond, uncond = logits.chunk(2, dim=0)
            logits = uncond + self.guidance * (cond - uncond)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return probs * self.kept(probs) if self.truncated else probs

    def kept(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, V) bool: the tokens truncation keeps (ties broken by index, as ``sort`` is stable)."""
        order = torch.sort(probs, dim=-1, descending=True, stable=True)
        keep_sorted = torch.ones_like(probs, dtype=torch.bool)
        if self.top_k is not None:
            keep_sorted[:, self.top_k:] = False
        if self.top_p is not None and self.top_p < 1:
            mass_before = order.values.cumsum(dim=-1) - order.values
            keep_sorted &= mass_before < self.top_p  # the most probable token always stays
        return torch.zeros_like(keep_sorted).scatter_(1, order.indices, keep_sorted)

    def pick(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF choice: logits (B, V) or (2B, V) when guided, u (B,) in [0, 1) -> tokens (B,) int64."""
        probs = self.probabilities(logits)
        cdf = probs.cumsum(dim=-1)
        target = (u.to(cdf.device, torch.float64) * cdf[:, -1]).unsqueeze(1)
        idx = torch.searchsorted(cdf, target, right=True).squeeze(1)
        if not self.truncated:
            return idx.clamp_(max=logits.shape[-1] - 1)
        # A target rounding onto the total mass would run past the last kept token: take that one.
        last_kept = logits.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)
        return torch.minimum(idx, last_kept)

    def for_sampler(self, tokens: torch.Tensor) -> torch.Tensor:
        """The chosen tokens (B,) as the sampler's batch holds them: twice over when guided."""
        return tokens.repeat(2) if self.guided else tokens
