"""What layout guidance costs: guided against unguided cached sampling, same prior, same process.

    .venv/bin/python benchmarks/guided_sampling.py [--device cpu] [--batch 16 64] [--guidance 2] [--repeats 3]

Guided sampling runs every map twice (with its layout and with the learned "no layout" input,
:mod:`msgnet.sampling.rule`), as one batch of twice the size; on hardware that is not saturated by one
batch the cost is below 2x. The figure is a ratio of two runs in this process (unguided first, then
guided, alternating ``--repeats`` times, the median of each), so a shared, noisy machine moves both
alike. Models: the codes priors of ``multi-mnist-cpu``, ``clevr-64`` and of a preset derived for
64x64 Multi-MNIST on a CPU, with ``condition_dropout`` 0.1 and random weights (speed does not depend
on them). The issue's ceiling is 2.2x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

import torch

from msgnet.config import PixelSNAILConfig, load_preset
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.sampling.cached import sample_cached


def _derived_codes_prior() -> PixelSNAILConfig:
    """The codes prior a CPU derivation gives 1,000 64x64 one-channel images of 10 digit classes."""
    from msgnet.data.format import ClassInfo, DatasetInfo
    from msgnet.preset_derivation import derive_structure

    classes = [ClassInfo(k, str(k), (k, k, k)) for k in range(11)]
    info = DatasetInfo(name="multi-mnist", image_size=(64, 64), channels=1, classes=classes, splits={})
    preset, _ = derive_structure(info, 1000, gpu=False)
    return preset.prior


def _models() -> list[tuple[str, PixelSNAILConfig]]:
    return [("multi-mnist-cpu prior", load_preset("multi-mnist-cpu").prior),
            ("derived 64 px CPU prior", _derived_codes_prior()),
            ("clevr-64 prior", load_preset("clevr-64").prior)]


def _seconds(model: PixelSNAIL, batch: int, guidance: float) -> float:
    cfg = model.config
    cond = torch.randint(0, cfg.num_condition_classes, (batch, cfg.height, cfg.width),
                         generator=torch.Generator().manual_seed(batch))
    start = time.perf_counter()
    sample_cached(model, batch, cond, generator=torch.Generator().manual_seed(1), batch_size=batch,
                  guidance=guidance)
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help="substring of the model names to run")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, intra-op threads {torch.get_num_threads()}; "
          f"guidance {args.guidance:g}, median of {args.repeats} alternating runs")
    header = f"{'model':26s} {'HxW':>6s} {'batch':>5s} {'unguided s':>10s} {'guided s':>9s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    torch.manual_seed(0)
    for name, cfg in _models():
        if args.only and args.only not in name:
            continue
        model = PixelSNAIL(replace(cfg, condition_dropout=0.1)).to(device).eval()
        _seconds(model, 2, args.guidance)  # warm-up
        for batch in args.batch:
            plain, guided = [], []
            for _ in range(args.repeats):
                plain.append(_seconds(model, batch, 1.0))
                guided.append(_seconds(model, batch, args.guidance))
            p, g = statistics.median(plain), statistics.median(guided)
            print(f"{name:26s} {f'{cfg.height}x{cfg.width}':>6s} {batch:5d} {p:10.2f} {g:9.2f} {g / p:6.2f}x",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
