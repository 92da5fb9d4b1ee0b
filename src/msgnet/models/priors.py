"""Loading a saved prior of either kind: the one place that knows both prior classes."""

from __future__ import annotations

from pathlib import Path

import torch

from msgnet.config import PixelSNAILConfig, from_dict
from msgnet.errors import UsageError
from msgnet.io import load_state_dict, read_model_config
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL


def load_prior(directory: Path | str, map_location: str | torch.device = "cpu") -> PixelSNAIL:
    """Rebuild a saved prior (:class:`PixelSNAIL` or ``LayoutPixelSNAIL``) from its directory.

    The model comes back in eval mode. Raises :class:`UsageError` for anything unreadable.
    """
    kinds: dict[str, type[PixelSNAIL]] = {
        PixelSNAIL.kind: PixelSNAIL,
        LayoutPixelSNAIL.kind: LayoutPixelSNAIL,
    }
    kind, data = read_model_config(directory)
    if kind not in kinds:
        raise UsageError(
            f"{Path(directory) / 'config.json'}: kind {kind!r} is not a prior "
            f"(expected one of {', '.join(kinds)})"
        )
    config = from_dict(PixelSNAILConfig, data, f"{Path(directory) / 'config.json'}")
    model = kinds[kind](config)
    state = load_state_dict(directory)
    where = Path(directory) / "model.safetensors"
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise UsageError(f"{where}: weights do not match config.json ({first})") from None
    if missing or unexpected:
        raise UsageError(
            f"{where}: weights do not match config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return model.to(map_location).eval()
