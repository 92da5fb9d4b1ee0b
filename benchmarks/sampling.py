"""Speed of the cached sampler against the reference sampler, on the same random-weight priors.

    .venv/bin/python benchmarks/sampling.py [--quick] [--device cpu] [--batch 16 64]

Models: the paper's CLEVR-64 latent prior (Table 5) and layout prior (Table 6), and the
priors of the ``multi-mnist-cpu`` preset. Weights are random (speed does not depend on
them). For every model and batch size it prints samples/s of both samplers and their
ratio. The reference sampler (one full forward pass per token) is timed on a prefix of
positions and extrapolated to the whole map, which it says; the cached sampler runs the
whole map (``--quick``: a prefix of rows, extrapolated, also said). As a check of
exactness, the tokens of the reference prefix must equal the cached sampler's.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from msgnet.config import PixelSNAILConfig, load_preset
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.sampling.cached import CachedSampler, sample_cached
from msgnet.sampling.common import draw_uniforms, pick_tokens
from msgnet.sampling.reference import sample_reference


def _models() -> list[tuple[str, PixelSNAILConfig, type[PixelSNAIL]]]:
    out = []
    for preset_name in ("clevr-64", "multi-mnist-cpu"):
        preset = load_preset(preset_name)
        out.append((f"{preset_name} prior", preset.prior, PixelSNAIL))
        out.append((f"{preset_name} layout prior", preset.layout_prior, LayoutPixelSNAIL))
    return out


def _condition(model: PixelSNAIL, batch: int, seed: int) -> torch.Tensor | None:
    cfg = model.config
    if not cfg.conditional:
        return None
    return torch.randint(0, cfg.num_condition_classes, (batch, cfg.height, cfg.width),
                         generator=torch.Generator().manual_seed(seed))


def _time_cached(
    model: PixelSNAIL, batch: int, rows: int, seed: int, threads: int, token_threads: int | None
) -> tuple[float, torch.Tensor]:
    """Seconds for ``rows`` rows of one batch, and the tokens.

    The whole map goes through :func:`sample_cached` itself; a prefix of rows (--quick)
    through the same steps by hand (one thread per token unless ``token_threads``).
    """
    cfg = model.config
    h, w = cfg.height, cfg.width
    cond = _condition(model, batch, seed)
    cuda = next(model.parameters()).device.type == "cuda"
    start = time.perf_counter()
    if rows >= h:
        tokens = sample_cached(model, batch, cond, generator=torch.Generator().manual_seed(seed),
                               batch_size=batch, threads=threads, token_threads=token_threads)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, tokens
    u = draw_uniforms(batch, h, w, torch.Generator().manual_seed(seed)).view(batch, -1)
    previous = torch.get_num_threads()
    torch.set_num_threads(token_threads or 1)
    try:
        sampler = CachedSampler(model, batch, cond, row_threads=threads)
        with torch.inference_mode():
            for p in range(rows * w):
                sampler.push(pick_tokens(sampler.logits(), u[:, p].to(sampler.device), 1.0))
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, sampler.tokens.cpu()
    finally:
        torch.set_num_threads(previous)


def _time_reference(model: PixelSNAIL, batch: int, positions: int, seed: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    tokens = sample_reference(model, batch, _condition(model, batch, seed),
                              generator=torch.Generator().manual_seed(seed),
                              batch_size=batch, max_positions=positions)
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="time prefixes only (4 rows cached, 1 position reference)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--reference-positions", type=int, default=None,
                        help="positions the reference sampler runs before extrapolating (default 2, quick 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the cached sampler's per-row matmuls (default: torch's)")
    parser.add_argument("--token-threads", type=int, default=None,
                        help="threads for the cached sampler's per-token work (default: sample_cached "
                             "chooses 1 or --threads by timing; 1 with --quick)")
    parser.add_argument("--only", default=None, help="substring of the model names to run")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads or torch.get_num_threads()
    ref_positions = args.reference_positions or (1 if args.quick else 2)
    print(f"torch {torch.__version__}, device {device}, intra-op threads {torch.get_num_threads()}, "
          f"cached sampler threads: {threads} per row, {args.token_threads or 'auto'} per token; "
          "fp32, random weights")
    header = f"{'model':34s} {'HxW':>6s} {'batch':>5s} {'cached s/batch':>14s} {'cached samples/s':>16s} " \
             f"{'reference samples/s':>19s} {'ratio':>7s}  notes"
    print(header)
    print("-" * len(header))
    torch.manual_seed(0)
    for name, cfg, cls in _models():
        if args.only and args.only not in name:
            continue
        model = cls(cfg).to(device).eval()
        h, w = cfg.height, cfg.width
        _time_cached(model, 2, 1, seed=0, threads=threads, token_threads=1)  # warm-up (lazy kernel set-up)
        _time_reference(model, 2, 1, seed=0)
        for batch in args.batch:
            rows = min(4, h) if args.quick else h
            t_cached, fast = _time_cached(model, batch, rows, seed=batch, threads=threads,
                                          token_threads=args.token_threads)
            cached_batch_s = t_cached * h / rows
            t_ref, ref = _time_reference(model, batch, ref_positions, seed=batch)
            ref_batch_s = t_ref * (h * w) / ref_positions
            same = torch.equal(ref.view(batch, -1)[:, :ref_positions], fast.view(batch, -1)[:, :ref_positions])
            notes = [f"reference: {ref_positions} of {h * w} positions, extrapolated"]
            if rows < h:
                notes.append(f"cached: {rows} of {h} rows, extrapolated")
            if not same:
                notes.append("TOKENS DIFFER")
            print(f"{name:34s} {f'{h}x{w}':>6s} {batch:5d} {cached_batch_s:14.2f} {batch / cached_batch_s:16.3f} "
                  f"{batch / ref_batch_s:19.5f} {ref_batch_s / cached_batch_s:7.0f}x  {'; '.join(notes)}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
