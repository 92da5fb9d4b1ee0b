"""What a stage's share of a training budget buys: its optimiser steps, its validations and, for the VQ-VAE,
how many images a step.

A derived preset (:mod:`msgnet.preset_derivation`) and each stage as it starts (:mod:`msgnet.workflow.budget`)
turn seconds and a measured step time into a :class:`~msgnet.config.TrainConfig` with the same arithmetic,
written once here.
"""

from __future__ import annotations

from dataclasses import replace

from msgnet.config import TrainConfig

MIN_STEPS = 10  # a floor for absurdly small budgets, not a recommendation
OVERRUN = 1.25  # a stage stops at this multiple of its share of the budget if the machine is slower than measured
VALIDATIONS = 20  # a derived stage validates this often at most (budgeted_train)
# ... and spends at most this share of its time validating. A fixed 20 validations ate a short stage: on a
# CPU without native bf16 the main job's layout prior bought 90 steps of its 345-step share, the rest
# reserved for validations (docs/pair-policies.md, "A CPU without native bf16").
VALIDATION_SHARE = 0.15
# What one validation costs (with its share of the stage's checkpoints and image grids), in training steps of
# the same model: the main job's stages (12-minute budget, 2-core CPU) ran 9%, 13% and 19% longer than their
# steps at the measured step time -- 0.79 s, 1.37 s and 3.0 s a validation at 0.20, 0.10 and 0.07 s a step;
# the codes prior's validation also decodes and scores ADHERENCE_PAIRS samples. A budget buys these first.
VALIDATION_COST_STEPS = {"vqvae": 4, "layout_prior": 14, "prior": 43}
VALIDATION_COST_BATCH = 32  # the training batch of those steps


def validation_steps(model: str, batch: int) -> float:
    """What one validation of ``model`` costs in its training steps of ``batch`` images: a validation takes
    the same time whatever the training batch, a step about as long as its images."""
    return VALIDATION_COST_STEPS[model] * VALIDATION_COST_BATCH / max(1, batch)


def stage_steps(seconds: float, step_seconds: float, validation_cost: float = 0.0) -> tuple[int, int]:
    """Optimiser steps that fill ``seconds`` at ``step_seconds`` each (at least ``MIN_STEPS``) and the number of
    validations among them: up to ``VALIDATIONS``, as many as fit in ``VALIDATION_SHARE`` of the time (at least
    one), each costing ``validation_cost`` steps (:func:`validation_steps`); the steps leave their time."""
    fits = seconds / max(step_seconds, 1e-6)
    validations = VALIDATIONS
    if validation_cost > 0:
        validations = int(min(VALIDATIONS, max(1, VALIDATION_SHARE * fits // validation_cost)))
    return max(MIN_STEPS, int(fits - validations * validation_cost)), validations


def budgeted_train(base: TrainConfig, steps: int, minutes: float, ema: bool,
                   validations: int = VALIDATIONS) -> TrainConfig:
    """``base`` set to train ``steps`` steps in about ``minutes``, with the settings that follow the
    step count: the wall-time cap (``OVERRUN`` times the share), checkpoints, image grids, ``validations``
    validations and (``ema``) a moving average of the weights over ~10% of the run."""
    # Small-data training: validate up to 20 times, keep the best-validated weights, stop after 5
    # validations without improvement; the priors also average their weights over ~10% of the run.
    decay = min(0.999, max(0.9, 1.0 - 10.0 / steps)) if ema else 0.0
    # Three decimals and a floor: a cap rounded to 0 would mean no cap at all.
    cap = max(0.001, round(minutes * OVERRUN, 3))
    return replace(base, iterations=steps, epochs=0, max_minutes=cap, checkpoint_every=max(50, steps // 4),
                   image_every=max(100, steps // 2), val_every=max(1, steps // max(1, validations)),
                   ema_decay=round(decay, 4))


# Fewer images a VQ-VAE step where its share buys few steps. On a CPU without native bf16 the main job's
# 5.4-minute share bought 565 steps of 32 images; the same time spent on smaller steps trained it far better
# (reconstruction fidelity / obedience / codes used of 240 per path): 32 images, 565 steps: 45.3% / 39.3% /
# 43, 25; 16 images, 1,050 steps: 78.0% / 41.3% / 195, 93; 8 images, 1,800 steps: 90.7% / 49.7% / 113, 225
# (docs/pair-policies.md, "A CPU without native bf16"). A CPU with native bf16 buys 2,268 steps of 32 there
# and keeps them (not compared at smaller batches).
FEW_VQVAE_STEPS = 1_500
SMALLEST_VQVAE_BATCH = 8


def vqvae_batch(batch: int, seconds: float, step_seconds: float) -> tuple[int, float]:
    """The VQ-VAE's images per step for a share of ``seconds`` in which a step of ``batch`` images takes
    ``step_seconds``: halved (down to ``SMALLEST_VQVAE_BATCH``) while the share buys fewer than
    ``FEW_VQVAE_STEPS`` steps; and the step time expected at that batch (a CPU step takes about as long as
    its images: 0.52, 0.27 and 0.16 s at 32, 16 and 8 measured; each stage times its step again as it starts)."""
    while batch // 2 >= SMALLEST_VQVAE_BATCH and seconds < FEW_VQVAE_STEPS * step_seconds:
        batch, step_seconds = batch // 2, step_seconds / 2
    return batch, step_seconds
