"""GPU sampling: the cached sampler with and without CUDA-graph replay, in one process.

    python benchmarks/cuda_graph_sampling.py [--preset multi-mnist] [--batch 256] [--num 512]

Random weights (speed does not depend on them). For the preset's codes prior and layout prior it
times :func:`msgnet.sampling.cached.sample_cached` and :class:`msgnet.sampling.graphed.CudaGraphSampler`
on the same uniforms, reports samples/s and the ratio, and checks that both drew the same tokens.
The graph sampler is timed after its first call (capture), which it reports separately.
"""

from __future__ import annotations

import argparse
import time

import torch

from msgnet.config import load_preset
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.sampling.cached import sample_cached
from msgnet.sampling.graphed import CudaGraphSampler


def _timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="multi-mnist")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--num", type=int, default=512, help="maps per timed run (a multiple of --batch)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU")
        return 2
    device = torch.device("cuda")
    preset = load_preset(args.preset)
    print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}; preset {preset.name}; "
          f"batch {args.batch}, {args.num} maps per run, fp32")
    for name, kind, cfg in (("prior", PixelSNAIL, preset.prior), ("layout prior", LayoutPixelSNAIL, preset.layout_prior)):
        torch.manual_seed(0)
        model = kind(cfg).to(device).eval()
        cond = None
        if cfg.conditional:
            cond = torch.randint(cfg.num_condition_classes, (args.num, cfg.height, cfg.width))

        def eager():
            return sample_cached(model, args.num, cond, generator=torch.Generator().manual_seed(1),
                                 batch_size=args.batch)

        graphed = CudaGraphSampler()

        def replay():
            return graphed(model, args.num, cond, generator=torch.Generator().manual_seed(1), batch_size=args.batch)

        capture_s, _ = _timed(replay, device)  # includes capturing the graphs
        eager_s, a = _timed(eager, device)
        graph_s, b = _timed(replay, device)
        same = torch.equal(a, b)
        print(f"{name:<13} cached {args.num / eager_s:8.1f} samples/s | cuda-graph {args.num / graph_s:8.1f} samples/s "
              f"| ratio {eager_s / graph_s:5.2f}x | first call incl. capture {capture_s:.1f} s | same tokens: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
