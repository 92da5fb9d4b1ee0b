"""One U-Net training of the benchmark, with everything on the device.

Images and layouts live on the device as uint8 and are gathered by index each step
(:mod:`msgnet.evaluation.benchmark.exposure` decides the indices up front). The loss is summed on the
device and read back only at the curve's evaluation points, so a step never waits for the
host. Every ``protocol.eval_every`` steps the U-Net is scored on a *monitor* split: that is
the learning curve a reader uses to see convergence, and, where the dataset has a separate
validation split, also model selection (the best checkpoint is kept). Figures are reported
on the test split, which neither training nor selection ever touches.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from msgnet.evaluation.dice import DiceAccumulator, DiceResult
from msgnet.evaluation.benchmark.exposure import ExposurePlan
from msgnet.evaluation.benchmark.protocol import UNetProtocol, build_unet


@dataclass
class DeviceSet:
    """A set on the device: images (N, C, H, W) uint8, layouts (N, H, W) uint8."""

    images: torch.Tensor
    layouts: torch.Tensor

    @classmethod
    def from_arrays(cls, images: np.ndarray, layouts: np.ndarray, device: torch.device) -> "DeviceSet":
        """From host arrays: images (N, H, W, C) uint8, layouts (N, H, W) uint8."""
        imgs = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return cls(imgs.to(device), torch.from_numpy(np.ascontiguousarray(layouts)).to(device))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and long layouts of the given indices."""
        return self.images.index_select(0, idx).float().div_(255.0), self.layouts.index_select(0, idx).long()


@dataclass
class TrainedUNet:
    """A trained U-Net and how it got there."""

    model: torch.nn.Module
    curve: list[dict] = field(default_factory=list)  # {"step", "loss", "monitor_dice"}
    selected_step: int | None = None  # the checkpoint kept (None: the last one, no selection)
    seconds: float = 0.0


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the U-Net's convolutions run on tensor cores); plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def train_unet(
    real: DeviceSet | None,
    added: DeviceSet | None,
    plan: ExposurePlan,
    num_classes: int,
    protocol: UNetProtocol,
    seed: int,
    augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    monitor: DeviceSet | None = None,
    select: bool = False,
    desc: str = "u-net",
    progress: bool = True,
) -> TrainedUNet:
    """Train a fresh U-Net following ``plan``; ``augment`` (if any) sees every batch, real and added.

    With ``select`` the checkpoint with the best monitor DICE is returned (the monitor split must
    then be a validation split, never the test split).
    """
    from monai.losses import DiceCELoss

    source = real if real is not None else added
    assert source is not None
    device = source.images.device
    plan = plan.to(device)
    torch.manual_seed(seed)
    steps = plan.steps
    model = build_unet(protocol, source.images.shape[1], num_classes).to(device)
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay, **fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    every = protocol.eval_every(steps)
    result = TrainedUNet(model)
    best, best_state = -1.0, None
    loss_sum = torch.zeros((), device=device)
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False)
    for step in bar:
        parts = []
        if plan.real is not None and real is not None:
            parts.append(real.batch(plan.real[step]))
        if plan.added is not None and added is not None:
            parts.append(added.batch(plan.added[step]))
        x = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        y = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        if augment is not None:
            x, y = augment(x, y)
        with autocast(device):
            loss = loss_fn(model(x), y.unsqueeze(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach().float()
        if (step + 1) % every == 0 or step + 1 == steps:
            n_window = (step % every) + 1
            point = {"step": step + 1, "loss": float(loss_sum) / n_window}  # one host read per curve point
            loss_sum.zero_()
            if monitor is not None:
                point["monitor_dice"] = evaluate_dice(model, monitor, num_classes, protocol.eval_batch_size).dice
                model.train()
                if select and point["monitor_dice"] > best:
                    best = point["monitor_dice"]
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    result.selected_step = step + 1
            result.curve.append(point)
            bar.set_postfix(loss=f"{point['loss']:.3f}", refresh=False)
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def predict(model: torch.nn.Module, data: DeviceSet, batch_size: int = 128) -> torch.Tensor:
    """Class maps (N, H, W) uint8 on the data's device."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=data.images.device)
        with autocast(data.images.device):
            out.append(model(data.batch(idx)[0]).argmax(1).to(torch.uint8))
    return torch.cat(out)


@torch.no_grad()
def evaluate_dice(model: torch.nn.Module, data: DeviceSet, num_classes: int, batch_size: int = 128) -> DiceResult:
    acc = DiceAccumulator(num_classes)
    pred = predict(model, data, batch_size)
    for start in range(0, len(data), batch_size):  # chunks: MONAI's one-hot of a whole set is large
        acc.update(pred[start : start + batch_size], data.layouts[start : start + batch_size])
    return acc.result()
