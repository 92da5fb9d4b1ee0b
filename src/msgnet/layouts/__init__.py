"""Layouts: class-index maps, their boxes, their latent-grid form and their display."""

from msgnet.layouts.boxes import boxes_overlap, boxes_to_layout, layout_to_objects
from msgnet.layouts.render import colorize, default_palette, grid, overlay, pairs_grid, save_png, to_rgb
from msgnet.layouts.resize import downsample_layout, upsample_layout

__all__ = [
    "boxes_overlap",
    "boxes_to_layout",
    "layout_to_objects",
    "colorize",
    "default_palette",
    "grid",
    "overlay",
    "pairs_grid",
    "save_png",
    "to_rgb",
    "downsample_layout",
    "upsample_layout",
]
