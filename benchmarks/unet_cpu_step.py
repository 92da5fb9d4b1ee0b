"""What the benchmark U-Net's CPU step would gain from channels-last, bf16 autocast and torch.compile,
and how its loop fares when another process shares the cores.

Part 1 times one optimiser step (the default protocol: 64x64 one-channel batches of 32 real + 8
added images, 11 classes) in four memory formats / precisions, interleaved round by round in one
process, and prints each as a ratio to plain fp32 (the reference). torch.compile is timed the
same way, and its one-off compilation separately (it is paid once per U-Net training).

Part 2 starts a second process that trains the same U-Net with 2 threads (a neighbour), then
times ``train_unet`` steps with 2 threads, with 1, and with the loop's own timing of both
(:class:`msgnet.threads.ThreadChooser`), as ratios to ``train_unet`` alone on 2 threads.

    python benchmarks/unet_cpu_step.py --rounds 3 --steps 12
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import torch

from msgnet.evaluation.benchmark.exposure import make_plan
from msgnet.evaluation.benchmark.loss import PairLoss
from msgnet.evaluation.benchmark.protocol import UNetProtocol, build_unet
from msgnet.evaluation.benchmark.training import DeviceSet, train_unet

BATCH, CLASSES, SIZE = 40, 11, 64


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(BATCH, 1, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (BATCH, SIZE, SIZE), generator=g)


def step_seconds(channels_last: bool, bf16: bool, compiled: bool, steps: int) -> tuple[float, float]:
    """(seconds per step after warm-up, seconds of the first two steps) of one variant."""
    torch.manual_seed(0)
    model = build_unet(UNetProtocol(), 1, CLASSES)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = PairLoss()
    x, y = batch()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    for i in range(steps + 2):
        if i == 2:
            warm, start = time.perf_counter() - start, time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(run(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps, warm


def neighbour(stop: mp.Event) -> None:  # type: ignore[valid-type]
    torch.set_num_threads(2)
    model = build_unet(UNetProtocol(), 1, CLASSES)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = batch(1)
    while not stop.is_set():
        loss = PairLoss()(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def loop_seconds(steps: int, threads: int, timed: bool = False) -> float:
    """Seconds per ``train_unet`` step on ``threads`` threads; ``timed``: the loop's own choice of 1 or
    ``threads`` (otherwise its thread timing is switched off)."""
    from contextlib import contextmanager

    from msgnet.evaluation.benchmark import training

    x, y = batch(2)
    pool = DeviceSet((x * 255).to(torch.uint8), y.to(torch.uint8))
    plan = make_plan(BATCH, 0, BATCH, None, steps, seed=0)
    previous, original = torch.get_num_threads(), training._timed_threads
    torch.set_num_threads(threads)
    if not timed:
        training._timed_threads = contextmanager(lambda device: (yield None))
    try:
        start = time.perf_counter()
        train_unet(pool, plan, CLASSES, UNetProtocol(), seed=0, progress=False)
        return (time.perf_counter() - start) / steps
    finally:
        training._timed_threads = original
        torch.set_num_threads(previous)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--loaded-steps", type=int, default=40)
    ap.add_argument("--skip-formats", action="store_true", help="only the shared-machine part")
    args = ap.parse_args()
    torch.set_num_threads(2)
    variants = {"fp32 (reference)": (False, False, False), "channels-last": (True, False, False),
                "bf16 autocast": (False, True, False), "channels-last + bf16": (True, True, False),
                "torch.compile": (False, False, True)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    warm: dict[str, float] = {}
    for _ in range(0 if args.skip_formats else args.rounds):
        for name, v in variants.items():
            per_step, first = step_seconds(*v, steps=args.steps)
            times[name].append(per_step)
            warm.setdefault(name, first)
    if not args.skip_formats:
        report_formats(times, warm, args.rounds)
    shared_machine(args.loaded_steps)


def report_formats(times: dict[str, list[float]], warm: dict[str, float], rounds: int) -> None:
    ref = min(times["fp32 (reference)"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {rounds} rounds")
    for name, ts in times.items():
        print(f"  {name:<22} {min(ts):.4f} s/step  ratio to fp32 {min(ts) / ref:.2f}  (first 2 steps {warm[name]:.1f} s)")


def shared_machine(steps: int) -> None:
    spawn = mp.get_context("spawn")  # a forked child of a process that ran OpenMP can hang
    stop = spawn.Event()
    other = spawn.Process(target=neighbour, args=(stop,))
    other.start()
    time.sleep(3)
    try:
        two = loop_seconds(steps, 2)
        one = loop_seconds(steps, 1)
        chosen = loop_seconds(steps, 2, timed=True)
    finally:
        stop.set()
        other.join()
    alone = loop_seconds(steps, 2)
    alone_timed = loop_seconds(steps, 2, timed=True)
    print(f"train_unet alone: 2 threads {alone:.3f} s/step, timed threads {alone_timed:.3f} s/step "
          f"({alone_timed / alone:.2f}x)")
    print(f"beside a neighbour training on both cores: 2 threads {two / alone:.1f}x the idle step, 1 thread "
          f"{one / alone:.1f}x, timed threads (what train_unet does) {chosen / alone:.1f}x")


if __name__ == "__main__":
    main()
