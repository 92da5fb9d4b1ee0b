"""Training throughput of the three models: today's step against the plain fp32 step, in one process.

For each of a preset's models (VQ-VAE, layout prior, codes prior) it builds the same
initial weights twice and times optimiser steps of

- ``fp32``: the reference path (fp32, contiguous memory, eager), what training ran before
  :mod:`msgnet.training.acceleration`;
- ``loop``: the step the training loop runs now (``precision: auto``, the model's preferred
  memory format), and with ``--compile`` that step under ``torch.compile`` as well;

interleaved round by round, so that a neighbour's load on a shared machine hits every
variant alike. It prints samples/s, the ratio against fp32, the model's FLOPs per sample
(``torch.utils.flop_counter``) and the achieved GFLOP/s beside the fp32 and bf16 matmul
peaks measured at the start of the same run. ``--loss-steps N`` also trains each variant
for N steps on one fixed batch stream and prints the final losses (does bf16 learn alike?).

    python benchmarks/training_speed.py                            # multi-mnist-cpu on cpu
    python benchmarks/training_speed.py --compile --steps 8
    python benchmarks/training_speed.py --preset multi-mnist --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from msgnet.config import load_preset
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.training.acceleration import Precision, compiled_for_training, place_for_training


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` on ``device`` (best of a short burst)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(stage: str, preset, batch: int, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lat = preset.vqvae.latent_size
    if stage == "vqvae":
        v = preset.vqvae
        return (torch.rand(batch, v.in_channels, v.image_size, v.image_size, generator=g).to(device),)
    if stage == "layout_prior":
        return (torch.randint(preset.layout_prior.num_classes, (batch, lat, lat), generator=g).to(device),)
    p = preset.prior
    return (torch.randint(p.num_classes, (batch, 2 * lat, lat), generator=g).to(device),
            torch.randint(p.num_condition_classes, (batch, 2 * lat, lat), generator=g).to(device))


def build(stage: str, preset) -> torch.nn.Module:
    torch.manual_seed(0)
    if stage == "vqvae":
        return DoublePathVQVAE(preset.vqvae)
    if stage == "layout_prior":
        return LayoutPixelSNAIL(preset.layout_prior)
    return PixelSNAIL(preset.prior)


def loss_fn(stage: str) -> Callable[..., torch.Tensor]:
    if stage == "vqvae":
        return lambda model, x: model(x).loss
    return lambda model, *t: torch.nn.functional.cross_entropy(model(*t), t[0])


class Variant:
    """One way of running the step: its own copy of the weights, optimiser and context."""

    def __init__(self, name: str, stage: str, preset, device: torch.device, accelerated: bool, compiled: bool):
        self.name = name
        self.model = build(stage, preset)
        train_cfg = getattr(preset, f"{stage}_train")
        if accelerated:
            self.model = place_for_training(self.model, device)
            self.context: Callable = lambda: Precision(train_cfg.precision, device)
        else:
            self.model = self.model.to(device)
            self.context = nullcontext
        self.model.train()
        self.call = compiled_for_training(self.model, device, compiled)
        self.loss = loss_fn(stage)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_cfg.learning_rate,
                                          **({"fused": True} if device.type == "cuda" and accelerated else {}))
        self.spent = 0.0
        self.last_loss = float("nan")

    def step(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with self.context():
            loss = self.loss(self.call, *inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def flops_per_sample(stage: str, preset, device: torch.device, batch: int) -> float:
    """Forward + backward FLOPs of one sample (matmuls and convolutions, as flop_counter counts them)."""
    model = build(stage, preset).to(device).train()
    inputs = make_inputs(stage, preset, batch, device, 0)
    with FlopCounterMode(display=False) as counter:
        loss_fn(stage)(model, *inputs).backward()
    return counter.get_total_flops() / batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="[multi-mnist-cpu on a CPU, multi-mnist on a GPU]")
    ap.add_argument("--device", default=None, help="cpu or cuda [cuda if available]")
    ap.add_argument("--stages", nargs="+", default=["vqvae", "layout_prior", "prior"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave)")
    ap.add_argument("--compile", action="store_true", help="also time the loop's step under torch.compile")
    ap.add_argument("--loss-steps", type=int, default=0,
                    help="train every variant N steps on the same batches and print the final loss")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = load_preset(args.preset or ("multi-mnist" if device.type == "cuda" else "multi-mnist-cpu"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    peak32 = matmul_peak(device, torch.float32)
    peak16 = matmul_peak(device, torch.bfloat16)
    print(f"device: {where}; torch {torch.__version__}; preset {preset.name}; matmul peak "
          f"fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; {args.steps} timed steps after "
          f"{args.warmup} warm-up, variants interleaved")
    head = f"{'model':<14}{'variant':<16}{'batch':>6}{'samples/s':>11}{'ratio':>8}{'GFLOP/s':>9}{'loss':>9}"
    print(head)
    print("-" * len(head))
    rows = []
    for stage in args.stages:
        batch = getattr(preset, f"{stage}_train").batch_size
        variants = [Variant("fp32", stage, preset, device, False, False),
                    Variant(f"loop ({Precision(getattr(preset, f'{stage}_train').precision, device).name})",
                            stage, preset, device, True, False)]
        if args.compile:
            variants.append(Variant(variants[1].name + "+compile", stage, preset, device, True, True))
        flops = flops_per_sample(stage, preset, device, batch)
        inputs = make_inputs(stage, preset, batch, device, 1)
        for i in range(args.warmup + args.steps):
            for v in variants:
                _sync(device)
                t0 = time.perf_counter()
                v.step(inputs)
                _sync(device)
                if i >= args.warmup:
                    v.spent += time.perf_counter() - t0
        for k in range(args.loss_steps):
            batch_k = make_inputs(stage, preset, batch, device, 100 + k)
            for v in variants:
                v.last_loss = float(v.step(batch_k))
        for v in variants:
            rate = batch * args.steps / v.spent
            row = {"model": stage, "variant": v.name, "batch": batch, "samples_per_s": rate,
                   "ratio": variants[0].spent / v.spent, "gflops": rate * flops / 1e9,
                   "loss_after": v.last_loss if args.loss_steps else None}
            rows.append(row)
            loss = f"{v.last_loss:>9.4f}" if args.loss_steps else f"{'':>9}"
            print(f"{stage:<14}{v.name:<16}{batch:>6}{rate:>11.1f}{row['ratio']:>7.2f}x{row['gflops']:>9.1f}{loss}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "preset": preset.name, "peak_fp32_gflops": peak32,
                       "peak_bf16_gflops": peak16, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
