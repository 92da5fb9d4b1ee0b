"""What the layout critic costs a VQ-VAE training step, per critic width, as a ratio in one process.

Builds the derived presets' VQ-VAE for Multi-MNIST (the ``multi-mnist-cpu`` preset's structure, told the
layout, FSQ codes, the obedience loss) without the critic and with it at each width, from the same initial
weights, and times optimiser steps on one batch of random images and layouts, as the training loop runs them
(precision ``auto``, the model's memory format). Variants are interleaved round by round, so that a
neighbour's load on a shared machine hits every one alike; the table gives each variant's median seconds per
step and its ratio against the VQ-VAE without the critic.

    python benchmarks/layout_critic_cost.py                       # widths 64 32 16, cuda if available
    python benchmarks/layout_critic_cost.py --device cpu --threads 2 --rounds 6 --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from msgnet.config import load_preset
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.training.acceleration import Precision, place_for_training


def make_step(width: int | None, device: torch.device, batch: int):
    """One variant's training step: the critic at ``width`` (None: no critic)."""
    base = load_preset("multi-mnist-cpu").vqvae
    cfg = replace(base, quantizer="fsq", fsq_levels="8,6,5", num_embeddings=240, restart_dead_codes=False,
                  layout_classes=11, obedience=0.02, layout_critic=0.05 if width else 0.0,
                  layout_critic_width=width or 64)
    torch.manual_seed(0)
    model = place_for_training(DoublePathVQVAE(cfg), device).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen) * 2 - 1).to(device)
    layout = torch.randint(0, 11, (batch, cfg.image_size, cfg.image_size), generator=gen).to(device)
    precision = Precision("auto", device)

    def step() -> None:
        with precision:
            loss = model(x, layout).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 32, 16])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each variant once per round)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    variants = {"no critic": None, **{f"critic width {w}": w for w in args.widths}}
    steps = {name: make_step(width, device, args.batch) for name, width in variants.items()}
    for step in steps.values():  # warm-up: allocator, kernels, the first autocast casts
        step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds[name].append((time.perf_counter() - t0) / args.steps)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}; batch {args.batch}; {args.rounds} rounds x {args.steps} steps")
    reference = statistics.median(seconds["no critic"])
    print("| variant | s / step (median) | ratio to no critic |\n|---|---|---|")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.3f} | {median / reference:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
