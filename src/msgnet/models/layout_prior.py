"""LayoutPixelSNAIL: the unconditional prior over H x W layouts (paper Table 6)."""

from __future__ import annotations

from msgnet.config import PixelSNAILConfig
from msgnet.models.pixelsnail import PixelSNAIL


class LayoutPixelSNAIL(PixelSNAIL):
    """PixelSNAIL over a (B, H, W) map of layout classes (0 = background, 1..C objects).

    ``config.num_classes`` is the number of layout classes including background; the
    model is unconditional (``num_condition_classes`` must be 0). Samplers, ``loss`` and
    saving are those of :class:`PixelSNAIL`.
    """

    kind = "layout_pixelsnail"

    def __init__(self, config: PixelSNAILConfig) -> None:
        if config.conditional:
            raise ValueError(
                "layout_prior: the layout prior is unconditional "
                f"(num_condition_classes must be 0, got {config.num_condition_classes})"
            )
        super().__init__(config)
