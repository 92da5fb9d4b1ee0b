"""The plainly correct sampler: one full forward pass per token (as the reference code does).

It exists as the yardstick of :mod:`msgnet.sampling.cached`: both consume randomness the
same way (:mod:`msgnet.sampling.common`), so one seed gives the same tokens from both.
"""

from __future__ import annotations

import torch

from msgnet.sampling.common import Randomness, plan_sampling, token_rule


@torch.inference_mode()
def sample_reference(
    model: torch.nn.Module,
    num: int,
    condition: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: Randomness = None,
    batch_size: int = 16,
    max_positions: int | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Sample ``num`` token maps (num, H, W) from a PixelSNAIL prior.

    ``condition``: (num, H, W), (1, H, W) or (H, W) class map for a conditional prior.
    ``top_k``, ``top_p``, ``guidance``: see :mod:`msgnet.sampling.rule`.
    ``max_positions`` stops after that many positions in raster order (the rest stay 0);
    it exists to time this sampler on a prefix.
    """
    rule = token_rule(temperature, top_k, top_p, guidance)
    plan = plan_sampling(model, num, condition, rule, generator, batch_size)
    h, w, u = plan.height, plan.width, plan.uniforms
    device = next(model.parameters()).device
    positions = h * w if max_positions is None else min(max_positions, h * w)
    result = plan.empty_result()
    was_training = model.training
    model.eval()
    try:
        for start, stop in plan.batches():
            tokens = torch.zeros(plan.sampler_batch(start, stop), h, w, dtype=torch.long, device=device)
            cond = plan.condition_of(start, stop)
            cond = None if cond is None else cond.to(device)
            for p in range(positions):
                i, j = divmod(p, w)
                logits = model(tokens, cond)[:, :, i, j]
                tokens[:, i, j] = rule.for_sampler(rule.pick(logits, u[start:stop, i, j])).to(device)
            result[start:stop] = tokens[: stop - start].cpu()
    finally:
        model.train(was_training)
    return result
