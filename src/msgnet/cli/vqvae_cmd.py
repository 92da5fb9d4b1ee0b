"""`msgnet vqvae inspect`: the paper's Fig. 3 (each path's contribution) and Fig. 4 (attention map)."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.errors import UsageError


def _pixel(text: str) -> tuple[int, int]:
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y, got {text!r}") from None
    return x, y


def register(sub: argparse._SubParsersAction) -> None:
    vq = sub.add_parser("vqvae", help="inspect a trained VQ-VAE")
    vsub = vq.add_subparsers(dest="vqvae_command", metavar="SUBCOMMAND")
    vsub.required = True
    ins = vsub.add_parser("inspect", help="reconstruction, per-path contributions, attention map (PNGs)")
    ins.add_argument("--run", type=Path, required=True)
    ins.add_argument("--image", type=Path, required=True, help="an image of the training data's size")
    ins.add_argument("--pixel", type=_pixel, default=None, metavar="X,Y",
                     help="pixel whose attention map is shown [image centre]")
    ins.add_argument("--layout", type=Path, default=None, metavar="PNG",
                     help="the image's layout (class ids), for a decoder told the layout")
    ins.add_argument("--out", type=Path, default=None, help="output folder [RUN_DIR/inspect]")
    ins.set_defaults(func=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from msgnet.evaluation.vqvae_inspect import vqvae_inspect

    if not args.image.is_file():
        raise UsageError(f"{args.image}: no such image")
    out = args.out or args.run / "inspect"
    # --pixel is X,Y (column, row) as image tools show it; the library takes (row, column).
    pixel = (args.pixel[1], args.pixel[0]) if args.pixel else None
    written = vqvae_inspect(args.run, args.image, out, pixel=pixel, layout_path=args.layout)
    for path in written or []:
        print(path)
    return 0
