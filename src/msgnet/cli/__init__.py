"""`msgnet <command>`: the command-line interface.

Each command group lives in its own module exposing ``register(subparsers)``; handlers
receive the parsed arguments. A :class:`~msgnet.errors.UsageError` anywhere becomes one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
        importlib.import_module(name).register(sub)
    return parser


# Where a command writes. ``run`` is written by the commands that set ``writes_run``; elsewhere it is read.
FILE_OUTPUTS = ("json", "preview")
INPUT_STRINGS = ("layouts",)  # inputs given as text (a folder or a COCO file)


def _paths(value: object) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, Path)]
    return []


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any work: every output of the command can be written, lies apart from every input
    (never inside one, never around one), and replaces only a file msgnet wrote."""
    from msgnet.device import choose_device
    from msgnet.io import check_can_write, check_output_file, ensure_output_apart

    outputs = ["out", *FILE_OUTPUTS] + (["run"] if getattr(args, "writes_run", False) else [])
    inputs = [p for k, v in vars(args).items() if k not in outputs and k != "run" for p in _paths(v)]
    if "run" not in outputs and isinstance(getattr(args, "run", None), Path):
        from msgnet.run_dir import RunDir

        inputs += RunDir(args.run).protected()  # a run read: its models and records, not its free space
    inputs += [Path(v) for k in INPUT_STRINGS if isinstance(v := getattr(args, k, None), str)]
    for attr in outputs:
        value = getattr(args, attr, None)
        if not isinstance(value, Path):
            continue
        if attr in FILE_OUTPUTS or value.suffix.lower() == ".png":
            if not (attr == "json" and getattr(args, "resume", False)):  # resuming appends to its own JSON
                check_output_file(value, inputs, field=attr)
        else:
            ensure_output_apart(value, *inputs, field=attr)
            check_can_write(value)
    if getattr(args, "device", None):
        choose_device(args.device)  # an unknown or absent device is refused before any work


# The library names the field a bad value came in ("subset: ..."); the command line names its flag.
# A field is a flag's dest unless listed here.
FIELD_FLAGS = {"subset": "--train-subset", "json_path": "--json", "max_candidates": "--qc-max-candidates",
               "layout_path": "--layout", "layouts_from": "--layouts", "subsets": "--real-subset",
               "digit_min": "--digit-size", "digit_max": "--digit-size", "min_visible_fraction": "--min-visible"}
_LEADING_FIELDS = re.compile(r"[a-z][a-z0-9_]*(?:(?:, | and )[a-z][a-z0-9_]*)*(?=[ :])")
# Further in a message, a field is named in backquotes (``set `resume` to continue``): its flag there.
_QUOTED_FIELD = re.compile(r"`([a-z][a-z0-9_]*)`")


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> its long option, over every sub-command of ``parser`` (the first seen wins)."""
    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for dest, flag in flag_names(sub).items():
                    found.setdefault(dest, flag)
        elif action.option_strings:
            found.setdefault(action.dest, max(action.option_strings, key=len))
    return found


def as_flags(message: str, flags: dict[str, str]) -> str:
    """``message`` with its leading field names ("val_fraction, test_fraction: ...") put as the flags, and
    the fields it names in backquotes further on (`resume`); a field the parser has no flag for stays."""
    known = {**flags, **FIELD_FLAGS}
    message = _QUOTED_FIELD.sub(lambda q: known.get(q.group(1), q.group(0)), message)
    m = _LEADING_FIELDS.match(message)
    if not m:
        return message
    names = [n for part in m.group(0).split(", ") for n in part.split(" and ")]
    if not all(n in known for n in names):
        return message
    if len({known[n] for n in names}) == 1:  # two fields of one flag (digit_min, digit_max: --digit-size)
        return known[names[0]] + message[m.end():]
    joined = m.group(0)
    for n in names:
        joined = re.sub(rf"\b{n}\b", known[n], joined, count=1)
    return joined + message[m.end():]


# Errors of the machine, not of msgnet: a full disk, a folder it may not write. One line, status 2.
_ENVIRONMENT_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                       errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                       errno.EROFS: "a read-only file system"}


def reason_fix(code: int | None) -> str:
    return "free some space" if code in (errno.ENOSPC, errno.EDQUOT) else "choose a place you may write"


def raise_internal() -> None:
    # Not the user's input but a bug in msgnet: say so in one line; the caller re-raises with the traceback.
    print("msgnet: internal error (a bug in msgnet, not in your input; the traceback follows)", file=sys.stderr)


class _ConsoleHandler(logging.Handler):
    """The library's log as a command's output: INFO lines on stdout (where msgnet printed them), warnings
    and worse on stderr, the message alone. The stream is looked up at each line, not bound once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except BrokenPipeError:
            raise
        except Exception:
            self.handleError(record)


@contextmanager
def console_logging() -> Iterator[None]:
    """Show msgnet's INFO log on the terminal while a command runs (and only then: the library alone
    prints nothing unless its caller configures logging)."""
    logger = logging.getLogger("msgnet")
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    with console_logging():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error (status 2)
        return int(exc.code or 0)
    try:
        _check_outputs(args)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"msgnet: error: {as_flags(str(exc), flag_names(parser))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `msgnet data info D | head -1`: the reader left, which is no error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not raise again
        return 0
    except OSError as exc:
        reason = _ENVIRONMENT_ERRORS.get(exc.errno or -1)
        if reason is None:
            raise_internal()
            raise
        where = exc.filename or "msgnet"
        again = " and rerun with --resume" if hasattr(args, "resume") else " and rerun"
        print(f"msgnet: error: {where}: {reason} ({reason_fix(exc.errno)}{again})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if hasattr(args, "resume"):
            print("msgnet: interrupted (what was finished is kept; rerun with --resume to continue)", file=sys.stderr)
        else:
            print("msgnet: interrupted (nothing half-written was kept; rerun the command)", file=sys.stderr)
        return 130
    except Exception:
        raise_internal()
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
