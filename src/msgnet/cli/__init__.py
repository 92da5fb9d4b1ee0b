"""`msgnet <command>`: the command-line interface.

Each command group lives in its own module exposing ``register(subparsers)``; handlers
receive the parsed arguments. A :class:`~msgnet.errors.UsageError` anywhere becomes one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from msgnet import __version__
from msgnet.errors import UsageError

COMMAND_MODULES = (
    "msgnet.cli.data_cmd",
    "msgnet.cli.train_cmd",
    "msgnet.cli.codes_cmd",
    "msgnet.cli.vqvae_cmd",
    "msgnet.cli.sample_cmd",
    "msgnet.cli.qc_cmd",
    "msgnet.cli.eval_cmd",
    "msgnet.cli.report_cmd",
    "msgnet.cli.run_cmd",
)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are a single line (and exit status 2, as argparse already uses)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="msgnet",
        description=(
            "Generate multi-object images together with their annotations (MSGNet). "
            "Typical flow: `msgnet data build` or `msgnet data import` -> `msgnet train all` -> "
            "`msgnet sample` -> `msgnet eval`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"msgnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error (status 2)
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"msgnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("msgnet: interrupted (what was finished is kept; rerun with --resume to continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
