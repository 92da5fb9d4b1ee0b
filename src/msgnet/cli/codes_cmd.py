"""`msgnet codes extract`."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.cli.common import add_device_argument


def register(sub: argparse._SubParsersAction) -> None:
    codes = sub.add_parser("codes", help="code maps of a dataset under a trained VQ-VAE")
    csub = codes.add_subparsers(dest="codes_command", metavar="SUBCOMMAND")
    csub.required = True
    ex = csub.add_parser("extract", help="store the 2HxW code maps and HxW layouts of both splits",
                         description="Encode every image of both splits with RUN_DIR/vqvae and store the "
                         "stacked 2HxW code maps and the layouts at HxW in RUN_DIR/codes/ for the priors.")
    ex.add_argument("--run", type=Path, required=True)
    ex.add_argument("--data", type=Path, required=True)
    add_device_argument(ex)
    ex.set_defaults(func=_extract)


def _extract(args: argparse.Namespace) -> int:
    from msgnet.cli.train_cmd import run_extract

    run_extract(args.run, args.data, args.device)
    print(f"codes written to {args.run / 'codes'}")
    return 0
