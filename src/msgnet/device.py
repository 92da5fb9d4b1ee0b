"""Which torch device a command runs on: the one asked for, checked, or the best one present.

Chosen when a command runs, never at import time. Training, sampling and evaluation all call
:func:`choose_device`, so ``--device`` means the same everywhere.
"""

from __future__ import annotations

import torch

from msgnet.errors import UsageError

KNOWN = "cpu, cuda or cuda:N"


def choose_device(device: str | None) -> torch.device:
    """``device`` if given (refused with one line when unknown or absent here), else CUDA when
    available, else CPU."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"device: unknown device {device!r} ({KNOWN})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device}: no CUDA GPU is available on this machine (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type != "cpu":
        raise UsageError(f"device: {device!r} is not supported ({KNOWN})")
    return dev
