"""The layout prior's own grid, chosen from the data (issue 32: layouts at their own resolution).

A layout drawn on a coarse grid and brought to image size can break the dataset's rule before any
prior draws it: on the 8x8 latent grid of a 64 px CPU preset, neighbouring digits merge or vanish in
about 18% of real Multi-MNIST layouts. So the LayoutPixelSNAIL gets the coarsest grid on which real
training layouts keep the rule: each candidate side (the codes' latent side times a power of two, up to
the image side: :func:`msgnet.config.layout_grids`) takes the real layouts through the grid and back
(:func:`msgnet.layouts.downsample_layout`, then :func:`msgnet.layouts.upsample_layout`, as a sampled
layout comes to image size) and counts those whose connected components still obey the rule
(:func:`msgnet.data.rules.rule_violations`, the checker sampled layouts answer to).

Only layouts that obey the rule at image size are counted: one that breaks it there (two touching
digits of one class are one component) cannot keep it on any grid. The image side itself keeps every
such layout, so a choice always exists.

Data that declares no rule is held to the shapes instead: the coarsest grid through which real layouts
come back with their objects mostly intact (:func:`shape_dice`). On the latent grid alone the RGB tissue
tiles of ``scripts/ihc_tiles.py`` (no rule) were drawn as 8-pixel blocks, nuclei as squares.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import binomtest

from msgnet.config import layout_grids
from msgnet.data.reader import Dataset
from msgnet.data.rules import rule_violations
from msgnet.errors import UsageError
from msgnet.layouts import downsample_layout, layout_to_objects, upsample_layout

# The share of real layouts that must keep the rule through the grid. Not 99%: on 64 px Multi-MNIST
# only the image grid itself keeps 99% (16x16 keeps about 96.5%, 32x32 fewer: a half-covered cell is a
# tie that goes to the object, so a digit grows into a neighbour's gap), and a 64x64 layout prior draws
# maps 16 times as long as the 16x16 ones. 95% takes 16x16 there, which the 8x8 latent grid (about 80%) is not.
KEEP_SHARE = 0.95
# At most this many training layouts are measured (evenly spaced over the ids): the share is then
# known to about +-0.2 points at 99%, in seconds rather than minutes for a 50,000-image set.
MAX_MEASURED = 4000
_CHUNK = 256  # layouts per round trip: a CLEVR-192 chunk stays under 100 MB
# Without a rule: the mean object DICE a layout keeps through the grid and back. Multi-MNIST's rule chooses
# 16x16, where its digit boxes keep 0.84 (8x8: 0.64); the IHC tiles keep 0.69 at 8x8, 0.84 at 16x16, 0.92 at
# 32x32, so they get 16x16 (measured on their training layouts; one value tried).
SHAPE_DICE = 0.8


@dataclass(frozen=True)
class LayoutGridChoice:
    """The chosen side, and what was measured to choose it."""

    grid: int
    latent_size: int
    measured: int  # real layouts counted (those obeying the rule at image size)
    broken_at_full: int = 0  # layouts read that break the rule at image size already (not counted)
    kept: dict[int, float] = field(default_factory=dict)  # side -> share kept, for every side tried
    keep: float = KEEP_SHARE
    # Data without a rule: side -> mean object DICE of the layouts through it (shape_dice), every side tried.
    shapes: dict[int, float] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """The share of measured layouts that keep the rule through the chosen grid."""
        return self.kept.get(self.grid, 1.0)

    def sentence(self) -> str:
        """One sentence for a preset's ``source``: the choice and the measured share kept."""
        g, lat = self.grid, self.latent_size
        if self.shapes:
            tried = ", ".join(f"{side}x{side} {dice:.2f}" for side, dice in self.shapes.items())
            return (f"The layout prior draws {g}x{g} layouts: the data declares no rule, so the grid is the "
                    f"coarsest through which {self.measured} real training layouts come back with a mean object "
                    f"DICE of at least {SHAPE_DICE:g} (measured: {tried})"
                    + ("." if g == lat else f"; the codes prior sees them downsampled to its {lat}x{lat} latent grid."))
        if not self.kept:
            return (f"The layout prior draws on the {lat}x{lat} latent grid: no real training layout (with "
                    "objects, obeying the dataset's rule where it declares one) to choose a finer one by.")
        tried = ", ".join(f"{side}x{side} {100 * share:.1f}%" for side, share in self.kept.items())
        coarser = "" if g == lat else f"; coarser grids lose more than {100 * (1 - self.keep):g}% of them"
        broken = (f" ({self.broken_at_full} that break the rule at image size already left out)"
                  if self.broken_at_full else "")
        return (f"The layout prior draws {g}x{g} layouts, the coarsest grid on which at least "
                f"{100 * self.keep:g}% of {self.measured} real training layouts{broken} keep the dataset's rule "
                f"through the grid and back ({100 * self.share:.1f}% do{coarser}; kept: {tried}); "
                + ("it is the codes' latent grid itself." if g == lat
                   else f"the codes prior sees them downsampled to its {lat}x{lat} latent grid."))


def keeps_rule(layouts: np.ndarray, rule: dict[str, Any], grid: int, num_classes: int) -> np.ndarray:
    """Which (N, H, W) image-size layouts still obey ``rule`` after the ``grid`` x ``grid`` round trip."""
    out = []
    for first in range(0, len(layouts), _CHUNK):
        back = _round_trip(layouts[first : first + _CHUNK], grid, num_classes)
        out.extend(not rule_violations(rule, layout_to_objects(lay), lay) for lay in back)
    return np.asarray(out, dtype=bool)


def _round_trip(layouts: np.ndarray, grid: int, num_classes: int) -> np.ndarray:
    """(N, H, W) layouts through the ``grid`` x ``grid`` grid and back to their size, as a sampled layout
    comes to image size."""
    size = tuple(layouts.shape[-2:])
    if size == (grid, grid):
        return layouts
    return np.asarray(upsample_layout(
        np.asarray(downsample_layout(layouts, grid, num_classes=num_classes), dtype=np.uint8), size))


def shape_dice(layouts: np.ndarray, grid: int, num_classes: int) -> np.ndarray:
    """Per (N, H, W) image-size layout, the mean over its object classes of the DICE between the layout and
    itself through the ``grid`` x ``grid`` round trip; NaN for a layout without objects."""
    out = []
    for first in range(0, len(layouts), _CHUNK):
        chunk = layouts[first : first + _CHUNK]
        back = _round_trip(chunk, grid, num_classes)
        per_class = []
        for c in range(1, num_classes):
            a, b = chunk == c, back == c
            total = a.sum((1, 2)) + b.sum((1, 2))
            per_class.append(np.where(total > 0, 2 * (a & b).sum((1, 2)) / np.maximum(total, 1), np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a layout without objects: NaN, left out
            out.append(np.nanmean(np.stack(per_class), axis=0))
    return np.concatenate(out) if out else np.zeros(0)


def _not_below(share: float, measured: int, keep: float) -> bool:
    """Whether ``share`` of ``measured`` layouts is not measurably below ``keep``: the upper end of its
    Wilson 95% interval reaches it. On 98 layouts 94.9% is within noise of 95%, and taking the next grid
    for it would cost the layout prior four times the step (measured: 390 steps instead of about 2,000)."""
    if share >= keep:
        return True
    high = binomtest(int(round(share * measured)), measured).proportion_ci(method="wilson").high
    return bool(high >= keep)


def _measured_ids(ids: Sequence[int], most: int) -> list[int]:
    """At most ``most`` of ``ids``, evenly spaced (deterministic: a derived preset must not vary by run)."""
    if len(ids) <= most:
        return list(ids)
    picks = np.linspace(0, len(ids) - 1, most).round().astype(int)
    return [ids[int(k)] for k in picks]


def choose_layout_grid(dataset: Dataset, latent_size: int, ids: Sequence[int] | None = None,
                       keep: float = KEEP_SHARE, max_layouts: int = MAX_MEASURED) -> LayoutGridChoice:
    """The coarsest layout-prior side on which at least ``keep`` of the real training layouts (``ids`` of
    the train split, or all of it) keep the dataset's rule; for data without a rule, the coarsest through which
    they keep their shapes (:data:`SHAPE_DICE`)."""
    info = dataset.info
    h, w = info.image_size
    if h != w:
        raise UsageError(f"{info.name}: a layout grid needs square images, these are {w}x{h}")
    sides = layout_grids(h, latent_size)
    if not sides:
        raise UsageError(f"latent_size: {latent_size} is not {h} halved zero or more times")
    chosen = _measured_ids(list(dataset.ids("train") if ids is None else ids), max_layouts)
    layouts = np.stack([dataset.read_layout(i) for i in chosen]) if chosen else np.zeros((0, h, w), np.uint8)
    if not info.rule:
        return _choose_by_shapes(layouts, sides, latent_size, info.num_classes, keep)
    obeying = layouts[keeps_rule(layouts, info.rule, h, info.num_classes)]
    broken = len(layouts) - len(obeying)
    if not len(obeying):
        return LayoutGridChoice(latent_size, latent_size, measured=0, broken_at_full=broken, keep=keep)
    kept: dict[int, float] = {}
    for side in sides:  # coarsest first: the first that keeps enough is the choice
        kept[side] = float(keeps_rule(obeying, info.rule, side, info.num_classes).mean()) if side != h else 1.0
        if _not_below(kept[side], len(obeying), keep):
            return LayoutGridChoice(side, latent_size, len(obeying), broken, kept, keep)
    raise AssertionError("the image side keeps every obeying layout")  # unreachable: kept[h] is 1.0


def _choose_by_shapes(layouts: np.ndarray, sides: Sequence[int], latent_size: int, num_classes: int,
                      keep: float) -> LayoutGridChoice:
    """The coarsest side through which ``layouts`` keep a mean object DICE of ``SHAPE_DICE`` (the image side
    keeps 1.0); the latent side where no layout has objects."""
    shapes: dict[int, float] = {}
    for side in sides:
        dice = shape_dice(layouts, side, num_classes)
        dice = dice[~np.isnan(dice)]
        if not len(dice):
            return LayoutGridChoice(latent_size, latent_size, measured=0, keep=keep)
        shapes[side] = float(dice.mean())
        if shapes[side] >= SHAPE_DICE:
            return LayoutGridChoice(side, latent_size, len(dice), keep=keep, shapes=shapes)
    raise AssertionError("the image side keeps every shape")  # unreachable: shapes[size] is 1.0
