"""What every importer shares: the geometry (resize, centre-crop, tiles), the split by source, atomic writing.

An importer describes its input as :class:`Source` objects, one per source image or
patient, each decoding lazily into :class:`Sample` s (one per image, or one per slice).
:func:`write_import` turns them into a dataset: every sample goes through the
:class:`Geometry`, all patches of one source land in the same split, and everything is
written through :class:`~msgnet.data.format.DatasetWriter` (nothing half-written).
``DIR/provenance.json`` records the source of every image id, so the split can be audited.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from msgnet.data.checks import check_split_fractions
from msgnet.data.format import ClassInfo, DatasetInfo, DatasetWriter, ObjectAnnotation, check_augmentations
from msgnet.errors import DataError, UsageError
from msgnet.layouts.boxes import boxes_to_layout
from msgnet.layouts.render import default_palette

PROVENANCE_FILE = "provenance.json"  # DIR/provenance.json: {"images": {id: {"source", "origin"}}}
MODES = ("none", "resize", "center-crop", "tile")
# Generic 2-D images (microscopy, satellite tiles, photos of smears) have no canonical
# orientation: flips and quarter turns give images just as real as the originals.
# Importers of data with an "up" (e.g. brats) declare less.
GENERIC_AUGMENTATIONS = ("flip", "rotate90", "affine")
Box = tuple[int, tuple[float, float, float, float]]  # (class id, [x, y, w, h]) in pixels, floats allowed


@dataclass
class Sample:
    """One image of a source before geometry: (H, W, C) uint8, its (H, W) layout and optional boxes.

    ``boxes`` are the objects' boxes (class ids already mapped). When ``layout_from_boxes``
    the layout is redrawn from the transformed boxes after resizing (sharper than resizing
    a box layout by nearest neighbour); otherwise the layout is resized by nearest neighbour.
    """

    image: np.ndarray
    layout: np.ndarray
    origin: str
    boxes: list[Box] | None = None
    layout_from_boxes: bool = False


@dataclass
class Source:
    """One source image or patient: ``key`` groups its patches into one split."""

    key: str
    origin: str
    load: Callable[[], Iterable[Sample]]
    split: str | None = None  # a fixed split (an official train/test list), else drawn by seed


def parse_size(text: str) -> tuple[int, int]:
    """``N`` or ``WxH`` -> (height, width)."""
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"size: expected N or WxH, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1 or max(vals) > 8192:
        raise UsageError(f"size: expected N or WxH with sides 1..8192, got {text!r}")
    return vals[1], vals[0]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C), channel by channel (Pillow's antialiased bilinear)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    chans = [np.asarray(Image.fromarray(image[:, :, c]).resize((w, h), Image.BILINEAR)) for c in range(image.shape[2])]
    return np.stack(chans, axis=2)


def resize_layout(layout: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class map -> (h, w) by nearest neighbour (class ids are never blended)."""
    h, w = size
    if layout.shape == (h, w):
        return layout
    return np.asarray(Image.fromarray(layout.astype(np.uint8)).resize((w, h), Image.NEAREST))


def convert_channels(image: np.ndarray, channels: int, origin: str) -> np.ndarray:
    """Grey <-> RGB on request (``--channels``); other mismatches are refused."""
    c = image.shape[2]
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if c == 3 and channels == 1:
        lum = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.round(lum).clip(0, 255).astype(np.uint8)[:, :, None]
    raise DataError(f"{origin}: has {c} channels, the dataset has {channels} (cannot convert)")


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile origins along one axis: stride round(tile * (1 - overlap)), the last tile flush with the edge."""
    stride = max(1, int(round(tile * (1.0 - overlap))))
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class Geometry:
    """How a source image becomes dataset images.

    ``prescale`` (h, w) first resizes the whole image (e.g. BBBC041 -> 256x256); then
    ``mode``: ``none`` keeps the size (all images must agree), ``resize`` scales to
    ``size`` ignoring aspect, ``center-crop`` scales the shorter side to ``size`` and
    crops the centre, ``tile`` cuts ``size`` tiles overlapping by ``overlap``.
    """

    mode: str = "none"
    size: tuple[int, int] | None = None  # (h, w)
    overlap: float = 0.0
    prescale: tuple[int, int] | None = None

    def validate(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"mode: unknown {self.mode!r} (choose from {', '.join(MODES)})")
        if self.mode != "none" and self.size is None:
            raise UsageError(f"mode {self.mode}: needs `size`")
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError(f"overlap: must be in [0, 1), got {self.overlap}")
        if self.overlap and self.mode != "tile":
            raise UsageError("overlap: only meaningful with `mode` tile")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.size:
            out["size"] = f"{self.size[1]}x{self.size[0]}"
        if self.mode == "tile":
            out["overlap"] = self.overlap
        if self.prescale:
            out["prescale"] = f"{self.prescale[1]}x{self.prescale[0]}"
        return out

    def apply(self, sample: Sample) -> list[Sample]:
        """The dataset images made from one sample (several for tiles)."""
        image, layout, boxes = sample.image, sample.layout, sample.boxes
        if self.prescale is not None:
            image, layout, boxes = _scaled(sample, image, layout, boxes, self.prescale)
        h, w = image.shape[:2]
        if self.mode == "none":
            return [_finish(sample, image, layout, boxes)]
        assert self.size is not None
        th, tw = self.size
        if self.mode == "resize":
            return [_finish(sample, *_scaled(sample, image, layout, boxes, (th, tw)))]
        if self.mode == "center-crop":
            scale = max(th / h, tw / w)
            sh, sw = max(th, int(round(h * scale))), max(tw, int(round(w * scale)))
            image, layout, boxes = _scaled(sample, image, layout, boxes, (sh, sw))
            y0, x0 = (sh - th) // 2, (sw - tw) // 2
            return [_finish(sample, *_cropped(image, layout, boxes, y0, x0, th, tw))]
        if h < th or w < tw:
            raise DataError(
                f"{sample.origin}: {w}x{h} is smaller than a {tw}x{th} tile (use a smaller `size` or resize first)")
        return [
            _finish(sample, *_cropped(image, layout, boxes, y0, x0, th, tw), suffix=f"@{x0},{y0}")
            for y0 in tile_starts(h, th, self.overlap)
            for x0 in tile_starts(w, tw, self.overlap)
        ]


def _scaled(sample: Sample, image, layout, boxes, size):
    h, w = image.shape[:2]
    sy, sx = size[0] / h, size[1] / w
    if boxes is not None:
        boxes = [(c, (x * sx, y * sy, bw * sx, bh * sy)) for c, (x, y, bw, bh) in boxes]
    image = resize_image(image, size)
    if sample.layout_from_boxes and boxes is not None:
        layout = boxes_to_layout(boxes, size)
    else:
        layout = resize_layout(layout, size)
    return image, layout, boxes


def _cropped(image, layout, boxes, y0, x0, th, tw):
    if boxes is not None:
        boxes = [(c, (x - x0, y - y0, bw, bh)) for c, (x, y, bw, bh) in boxes]
    return image[y0 : y0 + th, x0 : x0 + tw], layout[y0 : y0 + th, x0 : x0 + tw], boxes


def _finish(sample: Sample, image, layout, boxes, suffix: str = "") -> Sample:
    return Sample(np.ascontiguousarray(image), np.ascontiguousarray(layout), sample.origin + suffix, boxes,
                  sample.layout_from_boxes)


def clip_objects(boxes: Sequence[Box], size: tuple[int, int]) -> list[ObjectAnnotation]:
    """Boxes clipped to the image and rounded; boxes left with no pixel inside are dropped."""
    h, w = size
    out = []
    for cid, (x, y, bw, bh) in boxes:
        x0, y0 = max(int(round(x)), 0), max(int(round(y)), 0)
        x1, y1 = min(int(round(x + bw)), w), min(int(round(y + bh)), h)
        if x1 > x0 and y1 > y0 and cid > 0:
            out.append(ObjectAnnotation(int(cid), (x0, y0, x1 - x0, y1 - y0)))
    return out


def make_classes(names: Sequence[str], colors: Sequence[Sequence[int]] | None = None) -> list[ClassInfo]:
    """ClassInfo for ids 0..len(names)-1 (names[0] is the background); default colours if none given."""
    pal = default_palette(len(names))
    return [
        ClassInfo(i, str(n), tuple(int(v) for v in (colors[i] if colors is not None else pal[i])))  # type: ignore[misc]
        for i, n in enumerate(names)
    ]


def assign_splits(sources: Sequence[Source], val_fraction: float, test_fraction: float, seed: int,
                  where: str) -> dict[str, str]:
    """key -> "train" | "val" | "test", whole sources at a time.

    Fixed splits (an official list) are kept, and a split that the input fixes for some
    sources is not drawn from the others (BBBC041's test.json is the test split; its
    training.json is drawn into train and val only). The rest are drawn by seed: a share
    ``val_fraction`` to val, ``test_fraction`` to test, at least one source each when the
    share is above 0. Val is drawn first from one seeded order, so the val sources are the
    same as with ``--test-fraction 0`` (as imports made before the test split existed).
    """
    check_split_fractions(val_fraction, test_fraction, val_zero_allowed=True)
    fixed = {s.key: str(s.split) for s in sources if s.split is not None}
    free = sorted({s.key for s in sources} - set(fixed))
    out = dict(fixed)
    if not free:
        return out
    shares = {split: share for split, share in (("val", val_fraction), ("test", test_fraction))
              if share > 0 and split not in fixed.values()}
    if len(free) < len(shares) + 1:
        named = " and ".join(f"a {'validation' if k == 'val' else 'test'}" for k in shares)
        options = " or ".join(f"--{k}-fraction 0" for k in shares)
        raise UsageError(f"{where}: only {len(free)} source{'s' if len(free) > 1 else ''} ({', '.join(free)[:80]}); "
                         f"a training split plus {named} split need {len(shares) + 1} (or give {options})")
    counts = {k: max(1, int(round(v * len(free)))) for k, v in shares.items()}
    while sum(counts.values()) > len(free) - 1:  # keep one source for training, shrink the largest share
        largest = max(counts, key=lambda k: counts[k])
        counts[largest] -= 1
    order = [free[i] for i in np.random.default_rng(seed).permutation(len(free))]
    start = 0
    for split in ("val", "test"):
        n = counts.get(split, 0)
        out.update({k: split for k in order[start : start + n]})
        start += n
    out.update({k: "train" for k in order[start:]})
    return out


@dataclass
class ImportOptions:
    """Options every importer shares (the CLI's common flags)."""

    out: Path
    name: str
    val_fraction: float = 0.1
    test_fraction: float = 0.1  # 0: no test split (val then serves as test)
    seed: int = 0
    overwrite: bool = False
    channels: int | None = None  # convert grey <-> RGB to this; None: all images must agree
    skip_empty: bool = False  # drop images whose layout is all background
    max_per_source: int | None = None  # random subset of patches per source (seeded)
    progress: bool = True
    # Geometric augmentations declared valid (dataset.json "augmentations"); None: not declared.
    augmentations: list[str] | None = field(default_factory=lambda: list(GENERIC_AUGMENTATIONS))


@dataclass
class ImportReport:
    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    sources: int = 0
    skipped_empty: int = 0

    def to_text(self) -> str:
        total = sum(self.counts.values())
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v or k != "test")
        text = f"wrote {total} images ({parts}) from {self.sources} sources to {self.out}"
        if self.skipped_empty:
            text += f" ({self.skipped_empty} all-background images skipped)"
        return text + f"\ncheck it:  msgnet data info {self.out}"


def check_classes(layout: np.ndarray, num_classes: int, origin: str) -> None:
    top = int(layout.max()) if layout.size else 0
    if top >= num_classes:
        raise DataError(f"{origin}: class id {top} is outside the declared classes 0..{num_classes - 1}")


def write_import(
    sources: Sequence[Source],
    geometry: Geometry,
    classes: list[ClassInfo],
    options: ImportOptions,
    source_meta: dict[str, Any],
    where: str,
) -> ImportReport:
    """Run every source through the geometry and write the dataset atomically; return what was written."""
    geometry.validate()
    if options.max_per_source is not None and options.max_per_source < 1:
        raise UsageError("max_per_source: must be at least 1")
    if not sources:
        raise UsageError(f"{where}: nothing to import")
    if options.out.exists() and not options.overwrite:
        raise UsageError(f"out {options.out}: already exists (choose another `out`, or `overwrite`)")
    if options.augmentations is not None:
        check_augmentations(list(options.augmentations), "ImportOptions")
    splits = assign_splits(sources, options.val_fraction, options.test_fraction, options.seed, where)
    rng = np.random.default_rng(options.seed)
    num_classes = max(c.id for c in classes) + 1
    report = ImportReport(out=options.out, counts={"train": 0, "val": 0, "test": 0}, sources=len(sources))
    writer: DatasetWriter | None = None
    provenance: dict[str, dict[str, str]] = {}  # image id -> its source, so splits can be audited
    channels = options.channels
    try:
        for source in tqdm(sources, desc=f"import {source_meta.get('importer', '')}", unit="src",
                           disable=None if options.progress else True):  # None: off when not a terminal
            split = splits[source.key]
            patches = [p for sample in source.load() for p in geometry.apply(sample)]
            if options.skip_empty:
                kept = [p for p in patches if p.layout.any()]
                report.skipped_empty += len(patches) - len(kept)
                patches = kept
            if options.max_per_source is not None and len(patches) > options.max_per_source:
                pick = sorted(rng.choice(len(patches), options.max_per_source, replace=False))
                patches = [patches[i] for i in pick]
            for p in patches:
                if channels is None:
                    channels = p.image.shape[2]
                image = convert_channels(p.image, channels, p.origin)
                check_classes(p.layout, num_classes, p.origin)
                if writer is None:
                    info = DatasetInfo(name=options.name, image_size=tuple(p.layout.shape), channels=channels,  # type: ignore[arg-type]
                                       classes=classes, splits={"train": [], "val": [], "test": []},
                                       source={**source_meta, "geometry": geometry.describe(),
                                               "val_fraction": options.val_fraction,
                                               "test_fraction": options.test_fraction, "seed": options.seed,
                                               "split_by": "source"},
                                       augmentations=None if options.augmentations is None
                                       else list(options.augmentations))
                    writer = DatasetWriter(options.out, info, overwrite=options.overwrite)
                if p.layout.shape != writer.info.image_size:
                    h, w = writer.info.image_size
                    raise DataError(f"{p.origin}: size {p.layout.shape[1]}x{p.layout.shape[0]} differs from the "
                                    f"first image ({w}x{h}); give `size` (and `mode`) to bring them to one size")
                objects = clip_objects(p.boxes, p.layout.shape) if p.boxes is not None else None
                image_id = writer.add(split, image, p.layout, objects=objects)
                provenance[str(image_id)] = {"source": source.key, "origin": p.origin}
                report.counts[split] += 1
        if writer is None:
            raise UsageError(f"{where}: nothing to import (no images{' with objects' if options.skip_empty else ''})")
        (writer.tmp / PROVENANCE_FILE).write_text(json.dumps({"images": provenance}))
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return report
