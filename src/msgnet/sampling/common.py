"""What the reference and the cached sampler share, so that they agree token for token.

Randomness is consumed in one fixed way: all uniforms u (num, H, W) are drawn from the generator up front
(float64), one map per generator when the caller gives one generator per map (:mod:`msgnet.sampling.engine`
does: a pair's randomness is its own), and the token at p is the inverse CDF of softmax(logits / temperature)
at u[p] (after guidance and truncation: :mod:`msgnet.sampling.rule`), computed in float64. The result is
therefore independent of the batch size and of how the logits were computed; two samplers whose logits agree
to ~1e-6 pick different tokens only if some u lands within ~1e-6 of a CDF boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import torch

from msgnet.sampling.rule import TokenRule

# What a sampler draws its uniforms from: one generator for all maps, one per map, or torch's default.
Randomness = Union[torch.Generator, Sequence[torch.Generator], None]


def draw_uniforms(num: int, height: int, width: int, generator: Randomness) -> torch.Tensor:
    """All uniforms a sampling run consumes, (num, H, W) float64 on the CPU; map k's from ``generator[k]``
    when one generator per map is given, so that a map's tokens do not depend on the maps beside it."""
    if num < 1:
        raise ValueError(f"sampling: number of samples must be positive, got {num}")
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand((num, height, width), generator=generator, dtype=torch.float64)
    if len(generator) != num:
        raise ValueError(f"sampling: {len(generator)} generators for {num} maps")
    return torch.stack([torch.rand((height, width), generator=g, dtype=torch.float64) for g in generator])


def prepare_condition(model: torch.nn.Module, condition: torch.Tensor | None, num: int) -> torch.Tensor | None:
    """Validate a condition for ``model`` and expand (H, W) or (1, H, W) to (num, H, W)."""
    cfg = model.config  # type: ignore[attr-defined]
    if not cfg.conditional:
        if condition is not None:
            raise ValueError("sampling: this prior is unconditional but a condition was given")
        return None
    if condition is None:
        raise ValueError("sampling: this prior is conditional: a layout condition is required")
    if condition.dim() == 2:
        condition = condition[None]
    if condition.dim() != 3 or tuple(condition.shape[1:]) != (cfg.height, cfg.width):
        raise ValueError(f"sampling: condition must be (N, {cfg.height}, {cfg.width}), got {tuple(condition.shape)}")
    if condition.shape[0] == 1:
        condition = condition.expand(num, -1, -1)
    if condition.shape[0] != num:
        raise ValueError(f"sampling: {condition.shape[0]} conditions for {num} samples")
    condition = condition.long()
    if condition.numel() and (condition.min() < 0 or condition.max() >= cfg.num_condition_classes):
        raise ValueError(f"sampling: condition classes must be in [0, {cfg.num_condition_classes}), "
                         f"got [{int(condition.min())}, {int(condition.max())}]")
    return condition


def pick_tokens(logits: torch.Tensor, u: torch.Tensor, temperature: float) -> torch.Tensor:
    """Inverse-CDF choice: logits (B, V), u (B,) in [0, 1) -> tokens (B,) int64 (no truncation or guidance)."""
    return TokenRule(temperature).pick(logits, u)


@dataclass
class SamplingPlan:
    """A sampling call's checked inputs: every uniform it will consume, the condition per map, and
    the (start, stop) batches; all samplers start from one, which is why they agree token for token."""

    num: int
    height: int
    width: int
    rule: TokenRule
    batch_size: int
    uniforms: torch.Tensor  # (num, H, W) float64, CPU
    condition: torch.Tensor | None  # (num, H, W) int64 or None
    null_condition: torch.Tensor | None = None  # (H, W) "no layout" map when the rule is guided

    def batches(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.num, self.batch_size):
            yield start, min(start + self.batch_size, self.num)

    def condition_of(self, start: int, stop: int) -> torch.Tensor | None:
        """The condition of maps start..stop as the sampler's batch holds it: followed by as many
        "no layout" maps when guided (:mod:`msgnet.sampling.rule`)."""
        if self.condition is None:
            return None
        cond = self.condition[start:stop]
        return cond if self.null_condition is None else torch.cat([cond, self.null_condition.expand_as(cond)])

    def sampler_batch(self, start: int, stop: int) -> int:
        """Maps the sampler runs at once for maps start..stop (twice as many when guided)."""
        return (stop - start) * (2 if self.rule.guided else 1)

    def empty_result(self) -> torch.Tensor:
        return torch.zeros(self.num, self.height, self.width, dtype=torch.long)


def plan_sampling(model: torch.nn.Module, num: int, condition: torch.Tensor | None, rule: TokenRule,
                  generator: Randomness, batch_size: int) -> SamplingPlan:
    """Check a sampling call's arguments and draw all its uniforms up front."""
    cfg = model.config  # type: ignore[attr-defined]
    if batch_size < 1:
        raise ValueError(f"sampling: batch_size must be positive, got {batch_size}")
    uniforms = draw_uniforms(num, cfg.height, cfg.width, generator)
    condition = prepare_condition(model, condition, num)
    null = None
    if rule.guided:
        if not cfg.guidable:
            raise ValueError("sampling: guidance needs a conditional prior trained with condition_dropout > 0")
        null = model.null_condition(torch.zeros(cfg.height, cfg.width, dtype=torch.long))  # type: ignore[operator]
    return SamplingPlan(num, cfg.height, cfg.width, rule, int(batch_size), uniforms, condition, null)


def token_rule(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               guidance: float = 1.0) -> TokenRule:
    return TokenRule(float(temperature), top_k, top_p, float(guidance))
