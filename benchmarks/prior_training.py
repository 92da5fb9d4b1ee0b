"""Prior training throughput: what dropout costs a PixelSNAIL training step.

Builds a preset's latent PixelSNAIL and LayoutPixelSNAIL twice, once with the preset's
dropout and once with dropout 0, and times training steps of both on random tokens in
the same process, interleaved round by round so that a neighbour's load hits both
alike. Prints seconds per step and the ratio (no-dropout steps per dropout step).

Why it matters on a CPU: dropout inside ``scaled_dot_product_attention`` forces the
math kernel and a Bernoulli draw over the whole (B, heads, N, N) attention matrix, and
every gated block draws a mask too. The CPU preset trains its priors for less than an
epoch, where dropout buys no regularisation, so it sets dropout to 0.

    python benchmarks/prior_training.py                       # multi-mnist-cpu's shapes
    python benchmarks/prior_training.py --threads 2 --steps 10 --dropout 0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from msgnet.config import PixelSNAILConfig, load_preset
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL


def make_step(model: PixelSNAIL, batch: int, device: torch.device):
    """A closure running one Adam step on fixed random tokens (and condition)."""
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(cfg.num_classes, (batch, cfg.height, cfg.width), generator=gen).to(device)
    condition = None
    if cfg.conditional:
        condition = torch.randint(
            cfg.num_condition_classes, (batch, cfg.height, cfg.width), generator=gen
        ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss, _ = model.loss(tokens, condition)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def time_pair(kind: type[PixelSNAIL], cfg: PixelSNAILConfig, dropout: float, batch: int,
              device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """Seconds per step with ``dropout`` and with 0, interleaved step by step."""
    steps_by_dropout = {}
    for p in (dropout, 0.0):
        torch.manual_seed(0)
        model = kind(dataclasses.replace(cfg, dropout=p)).to(device)
        steps_by_dropout[p] = make_step(model, batch, device)
    spent = {dropout: 0.0, 0.0: 0.0}
    for i in range(warmup + steps):
        for p, step in steps_by_dropout.items():
            t0 = time.perf_counter()
            step()
            if i >= warmup:
                spent[p] += time.perf_counter() - t0
    return spent[dropout] / steps, spent[0.0] / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="multi-mnist-cpu")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave)")
    ap.add_argument("--dropout", type=float, default=0.1,
                    help="dropout of the reference run (the paper presets use 0.1-0.15)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    preset = load_preset(args.preset)
    print(f"device: {where}; torch {torch.__version__}; preset {args.preset}; "
          f"{args.steps} timed steps after {args.warmup} warm-up, interleaved")
    head = f"{'prior':<14}{'batch':>6}{'s/step p=' + str(args.dropout):>16}{'s/step p=0':>12}{'ratio':>8}"
    print(head)
    print("-" * len(head))
    for name, kind, cfg, train in (
        ("layout_prior", LayoutPixelSNAIL, preset.layout_prior, preset.layout_prior_train),
        ("prior", PixelSNAIL, preset.prior, preset.prior_train),
    ):
        with_dropout, without = time_pair(kind, cfg, args.dropout, train.batch_size, device,
                                          args.steps, args.warmup)
        print(f"{name:<14}{train.batch_size:>6}{with_dropout:>16.3f}{without:>12.3f}{with_dropout / without:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
