"""VQ-VAE training throughput: the CPU preset against the paper's CLEVR-64 preset.

Runs a few optimisation steps of each preset's double-path VQ-VAE on synthetic images
(same process, same device) and prints samples/s, seconds per step, peak memory and
the throughput ratio. Peak memory is torch.cuda.max_memory_allocated on a GPU; on CPU
it is the process's peak resident set (ru_maxrss), which only grows, so the presets
run smallest first and each row shows the peak reached so far.

    python benchmarks/vqvae_training.py                 # cuda if available, else cpu
    python benchmarks/vqvae_training.py --device cpu --threads 2 --steps 3
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from msgnet.config import load_preset
from msgnet.models.vqvae import DoublePathVQVAE


def bench(preset_name: str, device: torch.device, steps: int, warmup: int, batch: int | None) -> dict:
    preset = load_preset(preset_name)
    cfg = preset.vqvae
    bs = batch or preset.vqvae_train.batch_size
    torch.manual_seed(0)
    model = DoublePathVQVAE(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=preset.vqvae_train.learning_rate)
    x = torch.rand(bs, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        out = model(x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        peak_mb = peak_kb / 1024 if sys.platform != "darwin" else peak_kb / 2**20
    elapsed = time.perf_counter() - t0
    return {
        "preset": preset_name,
        "batch": bs,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "s_per_step": elapsed / steps,
        "samples_per_s": bs * steps / elapsed,
        "peak_MiB": peak_mb,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave)")
    ap.add_argument("--batch", type=int, default=None, help="override both presets' batch size")
    ap.add_argument("--presets", nargs=2, default=["multi-mnist-cpu", "clevr-64"], metavar=("SMALL", "PAPER"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}; {args.steps} timed steps after {args.warmup} warm-up")
    rows = [bench(name, device, args.steps, args.warmup, args.batch) for name in args.presets]
    head = f"{'preset':<18}{'batch':>6}{'params M':>10}{'s/step':>9}{'samples/s':>11}{'peak MiB':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['preset']:<18}{r['batch']:>6}{r['params_M']:>10.2f}{r['s_per_step']:>9.3f}"
              f"{r['samples_per_s']:>11.1f}{r['peak_MiB']:>10.0f}")
    ratio = rows[0]["samples_per_s"] / rows[1]["samples_per_s"]
    print(f"throughput ratio {rows[0]['preset']} / {rows[1]['preset']}: {ratio:.2f}x (samples/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
