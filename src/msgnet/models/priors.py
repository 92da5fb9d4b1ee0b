"""Loading a saved prior of either kind: the one place that knows both prior classes."""

from __future__ import annotations

from pathlib import Path

import torch

from msgnet.errors import UsageError
from msgnet.io import read_model_config
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL

PRIOR_CLASSES: dict[str, type[PixelSNAIL]] = {PixelSNAIL.kind: PixelSNAIL, LayoutPixelSNAIL.kind: LayoutPixelSNAIL}


def load_prior(directory: Path | str, map_location: str | torch.device = "cpu") -> PixelSNAIL:
    """The prior saved in ``directory``, whichever of the two kinds config.json names
    (:meth:`~msgnet.models.pretrained.PretrainedMixin.from_pretrained` of that class)."""
    kind, _ = read_model_config(directory)
    if kind not in PRIOR_CLASSES:
        raise UsageError(f"{Path(directory) / 'config.json'}: kind {kind!r} is not a prior "
                         f"(expected one of {', '.join(PRIOR_CLASSES)})")
    return PRIOR_CLASSES[kind].from_pretrained(directory, map_location)
