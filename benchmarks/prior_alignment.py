"""What a step of the codes prior's alignment costs, in training steps of the same prior.

Aligning the codes prior (msgnet.training.prior_alignment) instead of training it longer is a fair trade
only at the same CPU time, so the comparison needs this ratio (docs/adherence.md). This times both in
the same process, interleaved round by round so that a neighbour's load hits both alike: the
training step as the loop runs it (compiled where the preset compiles, the preset's precision) and the
alignment step as it runs (eager: the prior on twice the maps, forward and backward, and the frozen
reference's forward pass). Prints seconds per step and the ratio.

    python benchmarks/prior_alignment.py                         # multi-mnist-cpu's codes prior
    python benchmarks/prior_alignment.py --preset runs/job/preset.yaml --threads 2
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Callable

import torch

from msgnet.config import load_preset
from msgnet.layouts.classes import permute_object_classes
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.training.acceleration import Precision, compiled_for_training, place_for_training
from msgnet.training.prior_alignment import alignment_loss


def _batch(model: PixelSNAIL, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(cfg.num_classes, (batch, cfg.height, cfg.width), generator=gen)
    condition = torch.randint(cfg.num_condition_classes, (batch, cfg.height, cfg.width), generator=gen)
    return tokens.to(device), condition.to(device)


def training_step(model: PixelSNAIL, batch: int, device: torch.device, compile_: bool,
                  precision: str) -> Callable[[], None]:
    model = place_for_training(model, device).train()
    call = compiled_for_training(model, device, compile_)
    autocast = Precision(precision, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    tokens, condition = _batch(model, batch, device)

    def step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(call(tokens, condition), tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def alignment_step(model: PixelSNAIL, batch: int, device: torch.device) -> Callable[[], None]:
    model = model.to(device).train()
    reference = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    tokens, condition = _batch(model, batch, device)
    negative = permute_object_classes(condition, model.config.num_condition_classes, torch.Generator().manual_seed(1))

    def step() -> None:
        loss, _ = alignment_loss(model, reference, tokens, condition, negative, beta=0.02, lam=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="multi-mnist-cpu", help="a preset name or a preset.yaml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = load_preset(args.preset)
    train = preset.prior_train
    torch.manual_seed(0)
    steps = {"training": training_step(PixelSNAIL(preset.prior), train.batch_size, device, train.compile,
                                       train.precision),
             "alignment": alignment_step(PixelSNAIL(preset.prior), train.batch_size, device)}
    spent = dict.fromkeys(steps, 0.0)
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= args.warmup:
                spent[name] += time.perf_counter() - t0
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    per = {name: s / args.steps for name, s in spent.items()}
    print(f"device: {where}; torch {torch.__version__}; preset {args.preset}; batch {train.batch_size}; "
          f"{args.steps} timed steps after {args.warmup} warm-up, interleaved")
    print(f"training step {per['training']:.3f} s, alignment step {per['alignment']:.3f} s: "
          f"an alignment step costs {per['alignment'] / per['training']:.2f} training steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
