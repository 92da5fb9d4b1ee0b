"""Condition contrastive alignment of the codes prior: a short fine-tune that makes it read the classes.

A codes prior trained by likelihood alone reads the class its layout names only weakly: the class is
worth a few nats of a map's hundreds, so the loss barely rewards reading it (its class gain,
:mod:`msgnet.evaluation.class_gain`, is a fraction of a nat per object token after a CPU budget).
Condition contrastive alignment (CCA: Chen et al., ICLR 2025, "Toward guidance-free AR visual
generation via condition contrastive alignment") fine-tunes the trained prior against a frozen copy of
itself, ``p_ref``, raising a training map's likelihood under its own layout and lowering it under a
wrong one::

    loss = (-log σ(β Δ(x, c)) - λ log σ(-β Δ(x, c⁻))) / λ,    Δ(x, c) = log p(x | c) - log p_ref(x | c)

with the log-likelihoods summed over the map's tokens. Its optimum samples what classifier-free
guidance samples, with no cost at sampling time. The negative ``c⁻`` here is the map's own layout with
its object classes permuted (same shapes, every object of another class:
:func:`msgnet.layouts.classes.permute_object_classes`), which isolates the class; CCA's negatives,
other images' conditions, would teach the positions the prior already reads. A share of the maps of a
guidable prior sees the "no layout" condition, as a positive only, so that guidance keeps its
unconditional model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from msgnet.layouts.classes import permute_object_classes
from msgnet.models.pixelsnail import PixelSNAIL

__all__ = ["AlignmentSettings", "align_prior", "alignment_loss", "map_log_likelihood"]

# Keeps the alignment's stream apart from training's (same seed): batches, permutations and nulled maps.
_ALIGNMENT_SALT = 0xCCA


@dataclass(frozen=True)
class AlignmentSettings:
    """How the codes prior is aligned: ``steps`` of ``batch_size`` maps at ``learning_rate`` (Adam),
    CCA's ``beta`` (the scale of the likelihood ratio) and ``lam`` (the weight of the negatives), and the
    share of maps that see the "no layout" condition (``null_share``, a guidable prior only)."""

    steps: int
    beta: float = 0.02
    lam: float = 1.0
    learning_rate: float = 1e-4  # as TrainConfig.alignment_learning_rate, which train_prior passes
    batch_size: int = 32
    null_share: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0


def map_log_likelihood(model: torch.nn.Module, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """log p(tokens | condition) of each map (B,), in nats: the sum over its tokens."""
    return -F.cross_entropy(model(tokens, condition), tokens, reduction="none").flatten(1).sum(1)


def alignment_loss(model: torch.nn.Module, reference: torch.nn.Module, tokens: torch.Tensor,
                   condition: torch.Tensor, negative: torch.Tensor, beta: float, lam: float,
                   has_negative: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """CCA's loss over a batch: ``tokens`` (B, H, W) under ``condition`` (the positive) and ``negative``
    (same shape); ``has_negative`` (B,) bool: maps whose negative counts (default all). Returns the loss
    and the mean likelihood ratios of positives and negatives (nats per map)."""
    both = torch.cat([tokens, tokens])
    conditions = torch.cat([condition, negative])
    with torch.no_grad():
        ref_pos, ref_neg = map_log_likelihood(reference, both, conditions).chunk(2)
    pos, neg = map_log_likelihood(model, both, conditions).chunk(2)
    delta_pos, delta_neg = pos - ref_pos, neg - ref_neg
    weight = torch.ones_like(delta_neg) if has_negative is None else has_negative.to(delta_neg.dtype)
    loss = (-F.logsigmoid(beta * delta_pos) - lam * weight * F.logsigmoid(-beta * delta_neg)).mean() / lam
    return loss, {"delta_pos": float(delta_pos.detach().mean()), "delta_neg": float(delta_neg.detach().mean())}


def align_prior(prior: PixelSNAIL, codes: torch.Tensor, condition: torch.Tensor, settings: AlignmentSettings,
                progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``prior`` in place on its training maps ``codes`` (N, 2H, W) given their stacked layouts
    ``condition`` (N, 2H, W); returns what the alignment did (its settings and last ratios)."""
    device = next(prior.parameters()).device
    reference = copy.deepcopy(prior).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(settings.seed ^ _ALIGNMENT_SALT)
    optimizer = torch.optim.Adam(prior.parameters(), lr=settings.learning_rate)
    classes = prior.config.num_condition_classes
    null_share = settings.null_share if prior.config.guidable else 0.0
    prior.train()
    metrics: dict[str, float] = {}
    for _ in tqdm(range(settings.steps), desc="prior alignment", disable=not progress, dynamic_ncols=True):
        rows = torch.randint(0, codes.shape[0], (settings.batch_size,), generator=generator)
        tokens, layout = codes[rows].long().to(device), condition[rows].long().to(device)
        negative = permute_object_classes(layout, classes, generator)
        nulled = (torch.rand(settings.batch_size, generator=generator) < null_share).to(device)
        if null_share > 0:
            layout = torch.where(nulled.view(-1, 1, 1), prior.null_condition(layout), layout)
        loss, metrics = alignment_loss(prior, reference, tokens, layout, negative, settings.beta, settings.lam,
                                       ~nulled)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), settings.grad_clip)
        optimizer.step()
    prior.eval()
    return {"steps": settings.steps, "beta": settings.beta, "lam": settings.lam,
            "learning_rate": settings.learning_rate, **metrics}
