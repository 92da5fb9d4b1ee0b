"""The U-Net protocol of the augmentation benchmark: every choice that decides a DICE figure.

The paper leaves the protocol open (DESIGN §1), so it is fixed here and printed beside every
figure. Two choices matter most for a fair comparison of augmentations:

* **Convergence at every N.** The step count is ``max(min_steps, epochs x real batches)``:
  with 100 real images, 10 epochs are 40 steps and would measure an untrained U-Net.
* **Equal real exposure.** Every step draws one real batch exactly as the real-only baseline
  does; images a setting adds (synthetic, copy-paste) come *on top*, ``ratio x batch`` per step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from msgnet.errors import UsageError


# Fixed, not options: what msgnet.evaluation.benchmark.training.train_unet does, in words.
LOSS = ("Dice + cross-entropy as MONAI's DiceCELoss (softmax, one-hot targets, background included), "
        "with a weight for generated samples and pixels a filter leaves out")
SCHEDULE = "cosine decay to 0, no warm-up"
# torch.compile costs about 10 s per U-Net on a CPU and saves 39% of a step there (benchmarks/unet_cpu_step.py):
# a shorter training cannot win that time back, so it runs uncompiled.
COMPILE_FROM_STEPS = 300


@dataclass(frozen=True)
class UNetProtocol:
    """Everything that decides a U-Net DICE figure. Change a field and the figures are not comparable."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    norm: str = "instance"
    epochs: int = 10  # passes over the REAL training set ...
    min_steps: int = 1500  # ... but never fewer optimiser steps than this (small N)
    batch_size: int = 32  # real images per step; added images come on top
    lr: float = 2e-3  # AdamW with cosine decay to 0 (SCHEDULE)
    weight_decay: float = 1e-4
    curve_points: int = 20  # evaluations on the monitor split (learning curve, model selection)
    eval_batch_size: int = 128
    # Early stopping: end a training once this many curve points passed without a better
    # validation DICE (None: every step runs). Only with a validation split to watch.
    patience: int | None = None
    # torch.compile the U-Net's training steps where a compiler is present (0.61x the CPU step time after
    # about 10 s of compilation per U-Net: benchmarks/unet_cpu_step.py); the same sums in fused kernels, so
    # figures move by float rounding only.
    compile: bool = False

    def validate(self) -> None:
        if self.epochs < 1:
            raise UsageError("epochs: must be at least 1")
        if self.min_steps < 1:
            raise UsageError("min_steps: must be at least 1")
        if self.batch_size < 1:
            raise UsageError("batch_size: must be at least 1")
        if self.patience is not None and self.patience < 1:
            raise UsageError("patience: must be at least 1 curve point")
        if len(self.strides) != len(self.channels) - 1:
            raise UsageError("U-Net protocol: need one stride fewer than channels")

    def real_batch(self, num_real: int) -> int:
        return max(1, min(self.batch_size, num_real))

    def steps(self, num_real_train: int) -> int:
        per_epoch = max(1, math.ceil(num_real_train / self.real_batch(num_real_train)))
        return max(self.min_steps, self.epochs * per_epoch)

    def compiles(self, steps: int) -> bool:
        """Whether a training of ``steps`` steps is compiled (where a C++ compiler is present)."""
        return self.compile and steps >= COMPILE_FROM_STEPS

    def eval_every(self, steps: int) -> int:
        return max(1, steps // max(1, self.curve_points))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return (
            f"MONAI UNet 2D, channels {list(self.channels)}, strides {list(self.strides)}, "
            f"{self.num_res_units} residual unit(s), {self.norm} norm; {LOSS}; "
            f"AdamW lr {self.lr:g} wd {self.weight_decay:g}, {SCHEDULE}; "
            f"steps = max({self.min_steps}, {self.epochs} epochs of the real training set); "
            f"every step one real batch of {self.batch_size} drawn exactly as for the real-only baseline, "
            f"added images on top at the ratio (equal real exposure) unless a pair policy says otherwise; "
            f"bf16 autocast on CUDA, fp32 on CPU"
            + ("" if self.patience is None else
               f"; early stopping after {self.patience} of {self.curve_points} validation points without a better one")
            + ("; training steps compiled (torch.compile) where a C++ compiler is present and a training has "
               f"{COMPILE_FROM_STEPS} steps or more" if self.compile else "")
        )


def build_unet(protocol: UNetProtocol, in_channels: int, num_classes: int) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=protocol.channels,
        strides=protocol.strides,
        num_res_units=protocol.num_res_units,
        norm=protocol.norm,
    )
