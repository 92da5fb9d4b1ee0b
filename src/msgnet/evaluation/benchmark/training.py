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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from msgnet.evaluation.dice import DiceAccumulator, DiceResult
from msgnet.evaluation.benchmark.exposure import ExposurePlan
from msgnet.evaluation.benchmark.loss import PairLoss
from msgnet.evaluation.benchmark.protocol import UNetProtocol, build_unet
from msgnet.threads import ThreadChooser
from msgnet.training.acceleration import compiled_for_training, compiler_available


@dataclass
class DeviceSet:
    """A set on the device: images (N, C, H, W) uint8, layouts (N, H, W) uint8, and which rows are
    generated pairs (N,) bool (None: all real)."""

    images: torch.Tensor
    layouts: torch.Tensor
    generated: torch.Tensor | None = None

    @classmethod
    def from_arrays(cls, images: np.ndarray, layouts: np.ndarray, device: torch.device) -> "DeviceSet":
        """From host arrays: images (N, H, W, C) uint8, layouts (N, H, W) uint8."""
        imgs = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return cls(imgs.to(device), torch.from_numpy(np.ascontiguousarray(layouts)).to(device))

    @classmethod
    def pool(cls, real: "DeviceSet | None", added: "DeviceSet | None", added_generated: bool = False,
             copy_paste: "DeviceSet | None" = None) -> "DeviceSet":
        """One set of real rows, then copy-paste rows (if any, never generated), then added rows (the rows
        an :class:`ExposurePlan` indexes)."""
        parts = [(p, generated) for p, generated in ((real, False), (copy_paste, False), (added, added_generated))
                 if p is not None]
        if not parts:
            raise ValueError("a pool needs real or added images")
        flags = [torch.full((len(p),), g, dtype=torch.bool, device=p.images.device) for p, g in parts]
        cat = (lambda ts: torch.cat(ts)) if len(parts) > 1 else (lambda ts: ts[0])  # noqa: E731
        return cls(cat([p.images for p, _ in parts]), cat([p.layouts for p, _ in parts]), cat(flags))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and long layouts of the given indices."""
        return self.images.index_select(0, idx).float().div_(255.0), self.layouts.index_select(0, idx).long()

    def generated_of(self, idx: torch.Tensor) -> torch.Tensor | None:
        return None if self.generated is None else self.generated.index_select(0, idx)


@dataclass
class TrainedUNet:
    """A trained U-Net and how it got there."""

    model: torch.nn.Module
    curve: list[dict] = field(default_factory=list)  # {"step", "loss", "monitor_dice"}
    selected_step: int | None = None  # the checkpoint kept (None: the last one, no selection)
    stopped_at: int | None = None  # the step early stopping ended training at (None: ran every step)
    seconds: float = 0.0

    @property
    def best_monitor_dice(self) -> float | None:
        vals = [p["monitor_dice"] for p in self.curve if "monitor_dice" in p]
        return max(vals) if vals else None


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the U-Net's convolutions run on tensor cores); plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def cosine_schedule(steps: int, restart_at: int = 0) -> Callable[[int], float]:
    """Cosine decay to 0 over the steps; with ``restart_at`` > 0 two decays (pretraining, fine-tuning)."""
    def phase(s: int, length: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(s, length) / length))

    if restart_at <= 0:
        return lambda s: phase(s, steps)
    return lambda s: phase(s, restart_at) if s < restart_at else phase(s - restart_at, steps - restart_at)


@dataclass
class _Selection:
    """The best checkpoint on the monitor split so far, and how long since it improved."""

    best: float = -1.0
    state: dict | None = None
    since: int = 0


def train_unet(
    pool: DeviceSet,
    plan: ExposurePlan,
    num_classes: int,
    protocol: UNetProtocol,
    seed: int,
    augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    monitor: DeviceSet | None = None,
    select: bool = False,
    desc: str = "u-net",
    progress: bool = True,
    loss_fn: PairLoss | None = None,
) -> TrainedUNet:
    """Train a fresh U-Net on ``pool`` following ``plan``; ``augment`` (if any) sees every batch.

    With ``select`` the checkpoint with the best monitor DICE is returned (the monitor split must
    then be a validation split, never the test split), only from the fine-tuning phase of a
    pretraining plan; and with ``protocol.patience`` training stops once that many curve points
    passed without a better one.
    """
    device = pool.images.device
    plan = plan.to(device)
    torch.manual_seed(seed)
    steps = plan.steps
    model = build_unet(protocol, pool.images.shape[1], num_classes).to(device)
    if device.type == "cpu":  # oneDNN's convolutions: 0.84x the step time (benchmarks/unet_cpu_step.py)
        model = model.to(memory_format=torch.channels_last)
    # The steps run through the compiled module; selection, evaluation and the weights kept use ``model``,
    # whose parameters it shares.
    stepper = compiled_for_training(model, device, protocol.compiles(steps) and compiler_available(device))
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay, **fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(steps, plan.pretrain_steps))
    loss_fn = loss_fn or PairLoss()
    every = protocol.eval_every(steps)
    result, chosen = TrainedUNet(model), _Selection()
    loss_sum = torch.zeros((), device=device)
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False)
    with _timed_threads(device) as threads:
        for step in bar:
            timed = threads is not None and threads.before(step)
            tick = time.perf_counter()
            loss_sum += _step(stepper, opt, loss_fn, pool, plan.batches[step], augment, device)
            sched.step()
            if timed:
                threads.after(step, time.perf_counter() - tick)  # type: ignore[union-attr]
            if (step + 1) % every == 0 or step + 1 == steps:
                point = {"step": step + 1, "loss": float(loss_sum) / ((step % every) + 1)}  # one host read per point
                loss_sum.zero_()
                if monitor is not None:
                    point["monitor_dice"] = evaluate_dice(model, monitor, num_classes, protocol.eval_batch_size).dice
                    model.train()
                    if select and step + 1 > plan.pretrain_steps:
                        _keep_if_better(chosen, point, model, result)
                result.curve.append(point)
                bar.set_postfix(loss=f"{point['loss']:.3f}", refresh=False)
                if select and protocol.patience and chosen.since >= protocol.patience:
                    result.stopped_at = step + 1
                    break
    bar.close()
    if chosen.state is not None:
        model.load_state_dict(chosen.state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


THREAD_PROBE_PERIOD = 100  # steps between two timings of the thread counts (2 steps each)


@contextmanager
def _timed_threads(device: torch.device) -> Iterator[ThreadChooser | None]:
    """On a CPU with more than one thread: all of them and one are timed every 100 steps and the
    faster kept (beside a neighbour on both cores a step took 11.5x its idle time on 2 threads,
    2.9x on 1: benchmarks/unet_cpu_step.py); the process's setting is restored on exit."""
    previous = torch.get_num_threads()
    chooser = (ThreadChooser([previous, 1], span=2, period=THREAD_PROBE_PERIOD)
               if device.type == "cpu" and previous > 1 else None)
    try:
        yield chooser
    finally:
        torch.set_num_threads(previous)


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: PairLoss, pool: DeviceSet,
          idx: torch.Tensor, augment, device: torch.device) -> torch.Tensor:
    """One optimiser step on the pool rows ``idx``; returns the detached loss (on the device)."""
    x, y = pool.batch(idx)
    if augment is not None:
        x, y = augment(x, y)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device):
        loss = loss_fn(model(x), y, pool.generated_of(idx))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach().float()


def _keep_if_better(chosen: _Selection, point: dict, model: torch.nn.Module, result: TrainedUNet) -> None:
    if point["monitor_dice"] > chosen.best:
        chosen.best, chosen.since = point["monitor_dice"], 0
        chosen.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        result.selected_step = point["step"]
    else:
        chosen.since += 1


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
