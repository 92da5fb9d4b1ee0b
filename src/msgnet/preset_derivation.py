"""A preset derived from the dataset and the compute at hand, for `msgnet train all` without --config.

A user with 135 RGB microscopy tiles should not have to learn six dotted overrides before
anything trains. Everything a preset must agree with is in dataset.json, and the rest is a
matter of how much compute there is:

* **channels** and **classes** (condition classes of the codes prior, token classes of the
  layout prior) come straight from dataset.json;
* **image size** gives the number of stride-2 steps: the fewest that bring the latent grid to
  16–24 cells a side on a GPU, as in every paper preset (64 -> 16, 96 -> 24, 192 -> 24; 16–32 where
  no halving lands in 16–24), one halving more on a CPU (8–12 cells: measured to follow the layouts
  better per CPU-minute, ``CPU_GRID_EVIDENCE``);
* **the layout prior's grid**, given the training layouts, is the coarsest (latent side times a power
  of two, up to the image side) on which 95% of them keep the dataset's rule through the grid and
  back, or, for data without a rule, keep their shapes (:mod:`msgnet.data.layout_grid`); without the
  training layouts it is the latent grid;
* **the number of training images** and **the device** give the widths: the paper's widths on a
  GPU, the CPU presets' (measured in ``benchmarks/``) on a CPU, narrower priors for small sets;
* **small sets** (under 4,000 training images) train all three models on the geometric
  transforms dataset.json declares valid, image and layout alike;
* **the budget** (minutes) is split among the three models, VQ-VAE 45%, layout prior 15%, codes
  prior 40% (``STAGE_SHARES``: the VQ-VAE is what a small budget is short of); each stage's step count
  fills its share at a step time measured here, on this device, with the models just derived: the
  steady-state time (warm-up and compilation steps untimed, the fastest of eight timed steps), so
  that another process loading the machine during the probe does not shrink the run. Each stage
  buys its steps again when it starts, from what is left of the budget then
  (:mod:`msgnet.workflow.budget`).

``source`` states each choice in one sentence; it is written to ``RUN/preset.yaml``.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable, Sequence

import torch

from msgnet.config import PixelSNAILConfig, Preset, TrainConfig, VQVAEConfig
from msgnet.data.format import DatasetInfo
from msgnet.data.layout_grid import LayoutGridChoice
from msgnet.errors import UsageError
from msgnet.run_dir import stages_of
from msgnet.step_budget import (FEW_VQVAE_STEPS, OVERRUN, VALIDATION_SHARE, VALIDATIONS, budgeted_train,
                                 stage_steps, validation_steps, vqvae_batch)
from msgnet.training.acceleration import Precision, compiled_for_training, compiler_available, place_for_training

LATENT_RANGE = (16, 32)
# Why a CPU preset takes the coarser grid (docs/adherence.md, "The latent grid for a CPU budget").
CPU_GRID_EVIDENCE = ("on a CPU budget the coarser grid follows its layouts better per CPU-minute (1,000 64x64 "
                     "Multi-MNIST images, 12 minutes, guidance 3: QC-passing pairs per sampling minute 283 at 8x8 "
                     "against 6 at 16x16, median QC DICE 0.276 against 0.165, digits read as annotated 27.6% "
                     "against 24.5%; docs/adherence.md)")
# Shares of a derived budget. On the main job's data (1,000 images, 12 minutes) the VQ-VAE is what is short of
# steps (its reconstruction and obedience still climb at 2.5x the steps), while the layout prior's validation loss
# is flat from about 900 steps and the codes prior's from about 3,000 (docs/adherence.md, "Where the budget
# goes"); a stage that stops early hands its time on. The paper's proportions (24% / 32% / 44%, the CPU training
# of `multi-mnist-cpu` on 50,000 images) gave the VQ-VAE half the steps.
STAGE_SHARES = {"vqvae": 0.45, "layout_prior": 0.15, "prior": 0.40}
DEFAULT_BUDGET_MINUTES = 30.0
# Share of the codes prior's training maps that see the "no layout" condition (classifier-free guidance);
# LlamaGen and VAR train with 10%.
CONDITION_DROPOUT = 0.1
ADHERENCE_PAIRS = 16  # decoded samples the codes prior's validation scores against their layouts
# Small sets train on transformed copies (the dataset's declared transforms), up to about
# 4,000 code maps: a chosen figure, not a tuned one (docs/results.md "Low-data result" measures the whole).
AUGMENT_BELOW, AUGMENT_TARGET, MAX_COPIES = 4000, 4000, 8


def augment_copies_for(num_train: int) -> int:
    """Transformed copies of each training image for the priors: enough to bring a small set near
    ``AUGMENT_TARGET`` code maps (at most ``MAX_COPIES``); none from ``AUGMENT_BELOW`` images up."""
    if num_train >= AUGMENT_BELOW:
        return 0
    return min(MAX_COPIES, max(1, -(-AUGMENT_TARGET // max(num_train, 1)) - 1))


def latent_size_for(image_size: int, cpu: bool = False) -> int:
    """The latent side reached by the fewest stride-2 steps (at least one) that land in 16-24 cells,
    as the paper's presets do (64 -> 16, 96 -> 24, 192 -> 24); failing that, in 16-32.

    ``cpu``: one halving coarser, 8-12 cells (failing that 8-16): on a CPU budget the coarser grid
    follows its layouts better per CPU-minute (CPU_GRID_EVIDENCE).
    """
    ranges = ((8, 12), (8, 16)) if cpu else ((16, 24), LATENT_RANGE)
    floor = ranges[0][0]
    sides = []
    side = image_size
    while side % 2 == 0 and side // 2 >= floor:
        side //= 2
        sides.append(side)
    for low, high in ranges:
        fitting = [s for s in sides if low <= s <= high]
        if fitting:
            return fitting[0]
    raise UsageError(f"image size {image_size}: no number of halvings gives a latent grid of "
                     f"{ranges[-1][0]}-{ranges[-1][1]} cells (use sizes like 32, 48, 64, 96, 128, 192, 256)")


def _checked_latent(image_size: int, latent_size: int) -> int:
    side = image_size
    while side > latent_size and side % 2 == 0:
        side //= 2
    if side != latent_size or latent_size == image_size:
        raise UsageError(f"latent_size: {latent_size} is not {image_size} halved one or more times")
    return latent_size


def _widths(num_train: int, gpu: bool) -> tuple[VQVAEConfig, PixelSNAILConfig, str]:
    """VQ-VAE and prior widths (sizes filled in later) with the sentence that explains them."""
    if gpu:
        vq = VQVAEConfig(hidden_dim=128, residual_dim=64, embedding_dim=64, num_embeddings=256)
        channels = 256 if num_train >= 2000 else 128
        prior = PixelSNAILConfig(channels=channels, res_channels=channels, num_blocks=4, num_res_blocks=3,
                                 kernel_size=5, attention_dim=128, attention_heads=8, dropout=0.1)
        why = (f"on a GPU the paper's widths (VQ-VAE hidden 128, 64-dim codes; priors 4x3 gated blocks, kernel 5, "
               f"dropout 0.1), priors {channels} channels for {num_train} training images"
               + (" (fewer than 2,000: halved against overfitting)" if channels < 256 else ""))
        return vq, prior, why
    codes = 256 if num_train >= 1000 else 128
    vq = VQVAEConfig(hidden_dim=64, residual_dim=32, embedding_dim=32, num_embeddings=codes, restart_dead_codes=True)
    prior = PixelSNAILConfig(channels=64, res_channels=64, num_blocks=2, num_res_blocks=1, kernel_size=3,
                             attention_dim=32, attention_heads=4, dropout=0.0)
    why = (f"on a CPU the multi-mnist-cpu widths (VQ-VAE hidden 64, 32-dim codes, dead-code restarts; priors 64 "
           f"channels, 2x1 gated blocks, kernel 3, no dropout: benchmarks/prior_training.py), {codes} codes per "
           f"codebook for {num_train} training images")
    return vq, prior, why


# The decoder told the layout and its training (issue 32, docs/adherence.md "A decoder told the layout"):
# FSQ levels for about 2^8 codes (2^7 under 1,000 training images), the obedience loss's and the layout
# critic's weights, and the codes prior's input-token corruption (LlamaGen's 0.1).
FSQ_LEVELS = {True: "8,6,5", False: "8,5,3"}  # 240 and 120 codes, by "at least 1,000 training images"
OBEDIENCE_WEIGHT = 0.02
LAYOUT_CRITIC_WEIGHT = 0.05  # obedience 38.7% -> 57.0% for reconstruction 85.7% -> 74.3% (vqvae_ablation.sh)
# Width 32 against 64, the same 1,200 steps: obedience 62.0% against 57.0%, reconstruction 87.7% against 74.3%,
# at 1.32x a step without critic against 2.65x (benchmarks/layout_critic_cost.py; width 16: 92.3%, 53.0%, 1.18x).
LAYOUT_CRITIC_WIDTH = 32
# The obedience reader sees images blurred by 1 pixel, so it can be satisfied by a digit's shape, not by hatched
# texture. At the main job's steps: reconstruction fidelity 98.3% against 96.3%, obedience 67.7% against 61.0%,
# generated-only U-Net 0.402 against 0.348 (1,200 steps: sigma 2 fell to 58.0% reconstruction).
READER_BLUR = 1.0
TOKEN_CORRUPTION = 0.1


def _told_the_layout(vq: VQVAEConfig, num_classes: int, num_train: int) -> tuple[VQVAEConfig, str]:
    """``vq`` as msgnet's adherent variant: FSQ codes, a decoder told the layout, the obedience loss."""
    levels = FSQ_LEVELS[num_train >= 1000]
    vq = replace(vq, quantizer="fsq", fsq_levels=levels, num_embeddings=math.prod(int(v) for v in levels.split(",")),
                 restart_dead_codes=False, layout_classes=num_classes,
                 obedience=OBEDIENCE_WEIGHT if num_classes >= 3 else 0.0,
                 layout_critic=LAYOUT_CRITIC_WEIGHT if num_classes >= 3 else 0.0,
                 layout_critic_width=LAYOUT_CRITIC_WIDTH, reader_blur=READER_BLUR if num_classes >= 3 else 0.0)
    follow = (f" and trained to follow it where real codes disagree (obedience loss, weight {vq.obedience:g}, its "
              f"class reader seeing the images blurred by {vq.reader_blur:g} pixel, so that only shapes satisfy it; a "
              f"layout-conditioned patch critic {vq.layout_critic_width} channels wide, weight {vq.layout_critic:g}, "
              "so that what it draws looks real)"
              if vq.obedience > 0 else "; with one object class there is no other class to teach it to follow")
    why = (f"Both decoder paths are told the layout (per-class scale and shift at every resolution){follow}; "
           "the codes are FSQ instead of those codebooks "
           f"({levels}: {vq.num_embeddings} codes a path, which cannot collapse); the codes prior sees "
           f"{100 * TOKEN_CORRUPTION:g}% of its input tokens replaced at random, so that it reads the layout "
           "rather than recalls training images (docs/adherence.md).")
    return vq, why


def derive_structure(info: DatasetInfo, num_train: int, gpu: bool,
                     latent_size: int | None = None) -> tuple[Preset, list[str]]:
    """Models derived from the data, with placeholder step counts; and the sentences explaining them.

    ``latent_size`` replaces the derived latent side (it must be the image side halved one or more times).
    """
    h, w = info.image_size
    if h != w:
        raise UsageError(f"{info.name}: derived presets need square images, these are {w}x{h} "
                         "(import them at one square size, or write a preset)")
    latent = latent_size_for(h, cpu=not gpu) if latent_size is None else _checked_latent(h, latent_size)
    vq, prior, width_why = _widths(num_train, gpu)
    # Self-attention where the maps are small enough to afford it: the latent-size maps on a CPU
    # (as multi-mnist-cpu), one level up on a GPU (as the paper's 64 px presets).
    attention_below = 2 * latent if not gpu else 4 * latent
    vq = replace(vq, in_channels=info.channels, image_size=h, latent_size=latent, attention_below=attention_below)
    k = info.num_classes
    vq, adherence_why = _told_the_layout(vq, k, num_train)
    codes_prior = replace(prior, height=2 * latent, width=latent, num_classes=vq.num_embeddings,
                          num_condition_classes=k, condition_embedding_dim=32 if not gpu else 64,
                          condition_res_dim=32 if not gpu else 64, embedding_dim=32 if not gpu else 0,
                          position_embedding=not gpu, condition_dropout=CONDITION_DROPOUT)
    layout_prior = replace(prior, height=latent, width=latent, num_classes=k, num_condition_classes=0,
                           embedding_dim=32, channels=min(prior.channels, 64 if not gpu else 128),
                           res_channels=min(prior.res_channels, 64 if not gpu else 128),
                           attention_dim=min(prior.attention_dim, 64))
    steps = h.bit_length() - latent.bit_length()
    why = [
        f"{info.channels} channel(s) and {k} classes (background included) from dataset.json.",
        f"{h}x{h} images: {steps} stride-2 step(s) to a {latent}x{latent} latent grid, "
        + ("as asked" if latent_size is not None else "the fewest that reach 16-24 cells a side as in the paper's "
           "presets" if gpu else f"the fewest that reach 8-12 cells a side: {CPU_GRID_EVIDENCE}")
        + f"; the codes prior models the {2 * latent}x{latent} stacked map.",
        f"Widths: {width_why}.",
        f"The codes prior drops the layout of {100 * CONDITION_DROPOUT:g}% of its training maps (a learned "
        "\"no layout\" input), as LlamaGen and VAR train for classifier-free guidance, so that sampling can "
        "push the codes towards their layout (docs/adherence.md).",
        adherence_why,
    ]
    # A batch never larger than the training set: 24 tiles must train, not be refused.
    placeholder = TrainConfig(iterations=1, batch_size=min(32 if not gpu else 64, max(1, num_train)))
    preset = Preset(name=f"derived-{info.name}", vqvae=vq, vqvae_train=placeholder, prior=codes_prior,
                    prior_train=replace(placeholder, token_corruption=TOKEN_CORRUPTION), layout_prior=layout_prior,
                    layout_prior_train=placeholder)
    preset.validate()
    return preset, why


def on_layout_grid(preset: Preset, choice: LayoutGridChoice) -> tuple[Preset, str]:
    """The preset with its layout prior on ``choice.grid`` (issue 32), and the sentence stating the choice."""
    layout_prior = replace(preset.layout_prior, height=choice.grid, width=choice.grid)
    return replace(preset, layout_prior=layout_prior), choice.sentence()


# Steady-state step time: the first steps compile (torch.compile) and allocate, so they are not timed;
# of the timed ones the fastest is kept, what the machine does undisturbed: another process loading the
# CPU only ever slows a step down, so the minimum of eight survives a disturbance of up to seven of them.
WARMUP_STEPS, TIMED_STEPS = 2, 8
# Workflow stage names of the preset's three models ("layout-prior" trains ``layout_prior``): the registry's.
MODEL_OF_STAGE = {s.name: s.model for s in stages_of("msgnet") if s.model}


def _step_probes(preset: Preset) -> dict[str, tuple[Callable[[], torch.nn.Module], Callable, Callable]]:
    """Per model: how to build it, its loss and a random batch of a given size (the probe's inputs)."""
    from msgnet.models.layout_prior import LayoutPixelSNAIL
    from msgnet.models.pixelsnail import PixelSNAIL
    from msgnet.models.vqvae import DoublePathVQVAE

    def vqvae_loss(model: torch.nn.Module, x: torch.Tensor, layout: torch.Tensor | None) -> torch.Tensor:
        return model(x, layout).loss  # a decoder told the layout (and its obedience loss) costs more per step

    def prior_loss(model: torch.nn.Module, *tokens: torch.Tensor) -> torch.Tensor:
        # Through the module's call (compiled or not), as the prior stages compute it.
        return torch.nn.functional.cross_entropy(model(*tokens), tokens[0])

    lat, vq, lp = preset.vqvae.latent_size, preset.vqvae, preset.layout_prior
    return {
        "vqvae": (lambda: DoublePathVQVAE(vq), vqvae_loss,
                  lambda b: (torch.rand(b, vq.in_channels, vq.image_size, vq.image_size),
                             torch.randint(0, max(vq.layout_classes, 1), (b, vq.image_size, vq.image_size))
                             if vq.layout_classes else None)),
        # On the layout prior's own grid, which may be finer than the latent one.
        "layout_prior": (lambda: LayoutPixelSNAIL(lp), prior_loss,
                         lambda b: (torch.randint(0, lp.num_classes, (b, lp.height, lp.width)),)),
        "prior": (lambda: PixelSNAIL(preset.prior), prior_loss,
                  lambda b: (torch.randint(0, preset.prior.num_classes, (b, 2 * lat, lat)),
                             torch.randint(0, preset.prior.num_condition_classes, (b, 2 * lat, lat)))),
    }


def measure_step_seconds(preset: Preset, device: torch.device, repeats: int = TIMED_STEPS,
                         models: Sequence[str] | None = None, warmup: int = WARMUP_STEPS) -> dict[str, float]:
    """Steady-state seconds per optimiser step of the preset's models (``models``: some of "vqvae",
    "layout_prior", "prior"; None: all three) at their batch sizes, on ``device``: the fastest of
    ``repeats`` timed steps after ``warmup`` untimed ones."""
    out: dict[str, float] = {}
    for model_name, (build, loss_of, make_batch) in _step_probes(preset).items():
        if models is not None and model_name not in models:
            continue
        train_cfg = getattr(preset, f"{model_name}_train")
        # The step the loop will run: same precision and memory layout (compilation aside).
        model = place_for_training(build(), device).train()
        call = compiled_for_training(model, device, train_cfg.compile)
        precision = Precision(train_cfg.precision, device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        inputs = [t if t is None else t.to(device) for t in make_batch(train_cfg.batch_size)]

        def step() -> None:
            with precision:
                loss = loss_of(call, *inputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the step's kernels, not their launch

        for _ in range(warmup):
            step()
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        out[model_name] = min(times)
    return out


def check_budget(minutes: float) -> float:
    """A training budget in minutes: positive and finite."""
    if not (math.isfinite(float(minutes)) and float(minutes) > 0):
        raise UsageError(f"budget: must be a positive, finite number of minutes, got {minutes}")
    return float(minutes)


def _vqvae_images_per_step(preset: Preset, seconds: float, step_seconds: float,
                           why: list[str]) -> tuple[Preset, float]:
    """``preset`` with the VQ-VAE's batch for its share (:func:`msgnet.step_budget.vqvae_batch`), the step time
    expected at it; a sentence in ``why`` where the batch was made smaller."""
    before = preset.vqvae_train.batch_size
    batch, step_seconds = vqvae_batch(before, seconds, step_seconds)
    if batch != before:
        why.append(f"The VQ-VAE's share buys fewer than {FEW_VQVAE_STEPS} steps of {before} images on this machine: it "
                   f"trains on {batch} images a step instead, more steps in the same time (on a CPU without native "
                   "bf16 that trained it far better: docs/pair-policies.md).")
    return replace(preset, vqvae_train=replace(preset.vqvae_train, batch_size=batch)), step_seconds


def derive_preset(info: DatasetInfo, num_train: int, device: torch.device, budget_minutes: float | None = None,
                  step_seconds: Callable[[Preset, torch.device], dict[str, float]] = measure_step_seconds,
                  latent_size: int | None = None,
                  layout_grid: Callable[[int], LayoutGridChoice] | None = None) -> Preset:
    """The whole preset: structure from the data, step counts filling ``budget_minutes`` on ``device``.

    ``latent_size``: the latent side instead of the derived one (measurements of the grid use it).
    ``layout_grid``: the layout prior's grid for a latent side (:func:`msgnet.data.layout_grid.choose_layout_grid`
    on the training layouts); None keeps the layout prior on the latent grid.
    """
    budget = DEFAULT_BUDGET_MINUTES if budget_minutes is None else check_budget(budget_minutes)
    gpu = device.type == "cuda"
    preset, why = derive_structure(info, num_train, gpu, latent_size)
    if layout_grid is not None:  # before the step times: the layout prior's step depends on its grid
        preset, sentence = on_layout_grid(preset, layout_grid(preset.vqvae.latent_size))
        why.append(sentence)
    # torch.compile made the CPU priors' steps 1.25x faster (benchmarks/training_speed.py); on a GPU
    # it is unmeasured, so off. The step time below is measured compiled, as the loop will run it.
    compile_priors = not gpu and compiler_available(device)
    preset = replace(preset, prior_train=replace(preset.prior_train, compile=compile_priors),
                     layout_prior_train=replace(preset.layout_prior_train, compile=compile_priors))
    seconds = dict(step_seconds(preset, device))
    preset, seconds["vqvae"] = _vqvae_images_per_step(preset, budget * STAGE_SHARES["vqvae"] * 60, seconds["vqvae"],
                                                      why)
    trains = {}
    lrs = {"vqvae": 2e-3, "layout_prior": 2e-3, "prior": 1e-3} if not gpu else {"vqvae": 1e-3, "layout_prior": 1e-3,
                                                                               "prior": 3e-4}
    parts = []
    copies = augment_copies_for(num_train)
    declared = tuple(info.augmentations or ())
    augment = bool(copies and declared)
    for stage, share in STAGE_SHARES.items():
        minutes = budget * share
        batch = getattr(preset, f"{stage}_train").batch_size
        steps, validations = stage_steps(minutes * 60, seconds[stage], validation_steps(stage, batch))
        # The layout critic trades validation MSE for obedience: MSE, the VQ-VAE's selection metric, would keep
        # (and stop at) the weights from before the critic taught anything (measured: stopped at step 462 of
        # 1,552, keeping step 154's, reconstruction fidelity 16%). Such a VQ-VAE keeps its last weights.
        selects = not (stage == "vqvae" and preset.vqvae.layout_critic > 0)
        base = replace(getattr(preset, f"{stage}_train"), learning_rate=lrs[stage], schedule="linear", log_every=25,
                       val_samples=1000, keep_best=selects, patience=5 if selects else 0, augment=augment,
                       augment_copies=copies if augment and stage != "vqvae" else 0,
                       adherence_pairs=ADHERENCE_PAIRS if stage == "prior" else 0)
        trains[f"{stage}_train"] = budgeted_train(base, steps, minutes, ema=stage != "vqvae", validations=validations)
        parts.append(f"{stage} {steps} steps ({minutes:.1f} min at {seconds[stage]:.3f} s/step measured here, less "
                     f"{validations} validations at {validation_steps(stage, batch):g} steps each)")
    why.append(f"A {budget:g}-minute budget on {device.type}, split {', '.join(parts)}; linear decay to 0; each "
               f"stage stops at {OVERRUN:g}x its share if the machine is slower than measured. Each stage buys its "
               "steps again when it starts, at a step time measured then, with its share of the budget left then "
               "(time a stage leaves unspent passes to the next; RUN/run.json records each purchase).")
    critic = preset.vqvae.layout_critic > 0
    why.append(f"Small data: every stage validates up to {VALIDATIONS} times (in at most "
               f"{100 * VALIDATION_SHARE:g}% of its time), keeps its best-validated weights and stops after 5 "
               "validations without improvement" + (" (but the VQ-VAE, whose layout critic raises validation MSE "
               "while it teaches, trains to its last step and keeps those weights)" if critic else "")
               + "; the priors sample with a moving average of their weights. The "
               f"codes prior's validation also scores {ADHERENCE_PAIRS} decoded samples against their layouts "
               "(val_adherence in metrics.csv) when the run's QC segmenter exists.")
    if augment:
        why.append(f"{num_train} training images, fewer than {AUGMENT_BELOW}: all three models train on the "
                   f"transforms dataset.json declares valid ({', '.join(declared)}), image and layout alike; the "
                   f"VQ-VAE draws a fresh one per batch, the priors learn the codes of {copies} transformed "
                   f"copies of each image as well ({num_train * (1 + copies)} code maps).")
    elif copies:
        why.append(f"{num_train} training images, but dataset.json declares no geometric transform valid: "
                   "the models train on the images as they are.")
    preset = replace(preset, **trains, source=" ".join(why))
    preset.validate()
    return preset
