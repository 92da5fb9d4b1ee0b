"""Multi-MNIST from real MNIST digits (paper App. A.1 and §4.2).

Variants:
- ``standard``: three digits at random non-overlapping places on black;
- ``pairs``: two digits whose classes form an allowed pair, over a background grid;
- ``upper-half``: three digits entirely in the upper half; the lower half stays empty.

Splits never share a digit instance: training images use only MNIST training digits;
validation and test images use MNIST test digits, split per digit class into alternate
halves (1st, 3rd, ... of each class for val; 2nd, 4th, ... for test). Without a test split
(``test_fraction=0``) val uses all MNIST test digits, exactly as sets built before the test
split existed. ``provenance.json`` lists the MNIST digit indices of every image.
Layouts follow the paper: each digit's box is filled with its class (class id =
digit + 1, background 0). The per-pixel stroke masks go to ``masks/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from msgnet.data.checks import check_count, check_seed, check_split_fractions
from msgnet.data.format import ClassInfo, DatasetInfo, DatasetWriter, ObjectAnnotation
from msgnet.data.mnist_source import MnistDigits
from msgnet.data.schema import MAX_IMAGES
from msgnet.errors import UsageError
from msgnet.layouts.boxes import boxes_overlap, boxes_to_layout
from msgnet.layouts.render import default_palette

VARIANTS = ("standard", "pairs", "upper-half")
ALLOWED_PAIRS = ((6, 4), (7, 2), (5, 1), (8, 0), (9, 3))
STROKE_THRESHOLD = 64  # a pixel belongs to the stroke mask from this intensity on
GRID_SPACING = 8
GRID_INTENSITY = 70
_MAX_TRIES = 200
PROVENANCE_FILE = "provenance.json"  # {"images": {id: {"source": "mnist-train"|"mnist-test", "digits": [...]}}}


@dataclass(frozen=True)
class MultiMnistSpec:
    """What `msgnet data build multi-mnist` makes; every value is checked when the spec is made, naming
    its field. The defaults are the command's (it reads them here)."""

    variant: str = "standard"
    num: int = 50000  # total images (train + val + test)
    size: int = 64
    digit_min: int = 16  # digit cell side in pixels (the 28x28 MNIST cell is resized to it)
    digit_max: int = 20
    val_fraction: float = 0.05
    test_fraction: float = 0.05  # 0: no test split (val then serves as test, see Dataset.evaluation_splits)
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise UsageError(f"variant: unknown {self.variant!r} (choose from {', '.join(VARIANTS)})")
        check_count("num", self.num)
        check_seed("seed", self.seed)
        for name in ("size", "digit_min", "digit_max"):
            check_count(name, getattr(self, name))
        check_split_fractions(self.val_fraction, self.test_fraction)
        if self.num > MAX_IMAGES:
            raise UsageError(f"num: at most {MAX_IMAGES:,} images in one build, got {self.num:,}")
        if self.num < 2 + (self.test_fraction > 0):
            raise UsageError(f"num: need at least {2 + (self.test_fraction > 0)} images (one per split)")
        if not 4 <= self.digit_min <= self.digit_max:
            raise UsageError(f"digit_min, digit_max: need 4 <= min <= max, got {self.digit_min} "
                             f"and {self.digit_max}")
        if self.size < 16 or self.size > 1024:
            raise UsageError(f"size: must be between 16 and 1024 pixels, got {self.size}")
        _, _, rw, rh = self.region
        # A placement must always exist: a grid of digit cells with room for every digit.
        if (rw // self.digit_max) * (rh // self.digit_max) < self.num_digits:
            raise UsageError(
                f"digit_max: {self.num_digits} digits of up to {self.digit_max}px do not fit a "
                f"{self.size}px {self.variant} image"
            )

    def split_sizes(self) -> dict[str, int]:
        """Images per split; val (and test, when asked) get at least one image each."""
        num_val = max(1, int(round(self.num * self.val_fraction)))
        num_test = max(1, int(round(self.num * self.test_fraction))) if self.test_fraction > 0 else 0
        return {"train": self.num - num_val - num_test, "val": num_val, "test": num_test}

    @property
    def num_digits(self) -> int:
        return 2 if self.variant == "pairs" else 3

    @property
    def region(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) that every digit must lie in."""
        if self.variant == "upper-half":
            return (0, 0, self.size, self.size // 2)
        return (0, 0, self.size, self.size)


def class_infos() -> list[ClassInfo]:
    pal = default_palette(11)
    return [ClassInfo(0, "background", (0, 0, 0))] + [
        ClassInfo(d + 1, str(d), tuple(int(v) for v in pal[d + 1])) for d in range(10)  # type: ignore[misc]
    ]


def rule_for(spec: MultiMnistSpec) -> dict:
    x, y, w, h = spec.region
    rule: dict = {
        "object_count": {"min": spec.num_digits, "max": spec.num_digits},
        "no_overlap": True,
    }
    if spec.variant == "pairs":
        rule["allowed_class_sets"] = [sorted([a + 1, b + 1]) for a, b in ALLOWED_PAIRS]
        rule["description"] = "two digits forming one of the pairs {6,4},{7,2},{5,1},{8,0},{9,3}"
    if spec.variant == "upper-half":
        rule["region"] = {"x": x, "y": y, "w": w, "h": h}
        rule["description"] = "three digits, all entirely in the upper half"
    return rule


def _background(spec: MultiMnistSpec) -> np.ndarray:
    bg = np.zeros((spec.size, spec.size), dtype=np.uint8)
    if spec.variant == "pairs":
        bg[::GRID_SPACING, :] = GRID_INTENSITY
        bg[:, ::GRID_SPACING] = GRID_INTENSITY
    return bg


def _scaled_digit(digit: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR))


def _tight_box(cell: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(cell >= STROKE_THRESHOLD)
    if len(ys) == 0:  # a blank digit: fall back to the whole cell
        return 0, 0, cell.shape[1], cell.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _choose_classes(spec: MultiMnistSpec, rng: np.random.Generator) -> list[int]:
    if spec.variant == "pairs":
        pair = list(ALLOWED_PAIRS[rng.integers(len(ALLOWED_PAIRS))])
        rng.shuffle(pair)
        return pair
    return [int(c) for c in rng.integers(0, 10, size=spec.num_digits)]


def compose_image(
    spec: MultiMnistSpec,
    rng: np.random.Generator,
    images: np.ndarray,
    by_class: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[ObjectAnnotation], list[int]]:
    """One image, its box layout, its stroke mask, its objects and the indices into ``images`` it used.

    ``by_class[d]`` holds the indices of ``images`` that may be drawn for digit ``d``.
    """
    rx, ry, rw, rh = spec.region
    while True:
        canvas = _background(spec)
        mask = np.zeros_like(canvas)
        objects: list[ObjectAnnotation] = []
        used: list[int] = []
        for digit in _choose_classes(spec, rng):
            pool = by_class[digit]
            index = int(pool[rng.integers(len(pool))])
            cell = _scaled_digit(images[index], int(rng.integers(spec.digit_min, spec.digit_max + 1)))
            bx, by, bw, bh = _tight_box(cell)
            for _ in range(_MAX_TRIES):
                # Place the tight box uniformly inside the region, then the cell around it.
                x = int(rng.integers(rx, rx + rw - bw + 1))
                y = int(rng.integers(ry, ry + rh - bh + 1))
                box = (x, y, bw, bh)
                if not any(boxes_overlap(box, o.bbox) for o in objects):
                    break
            else:
                break  # no room left for this digit: start the image again
            cx, cy = x - bx, y - by
            # Paste only the part of the cell that falls on the canvas (faint cell edges may hang over).
            y0, x0 = max(cy, 0), max(cx, 0)
            y1, x1 = min(cy + cell.shape[0], spec.size), min(cx + cell.shape[1], spec.size)
            patch = cell[y0 - cy : y1 - cy, x0 - cx : x1 - cx]
            # Strokes outside the tight box are faint (< threshold); keep them out of other boxes.
            keep = np.zeros_like(patch, dtype=bool)
            keep[max(y - y0, 0) : y + bh - y0, max(x - x0, 0) : x + bw - x0] = True
            patch = np.where(keep, patch, 0)
            np.maximum(canvas[y0:y1, x0:x1], patch, out=canvas[y0:y1, x0:x1])
            stroke = (patch >= STROKE_THRESHOLD) & keep
            mask[y0:y1, x0:x1][stroke] = digit + 1
            objects.append(ObjectAnnotation(digit + 1, box))
            used.append(index)
        else:
            layout = boxes_to_layout(objects, (spec.size, spec.size))
            return canvas, layout, mask, objects, used


def digit_pools(spec: MultiMnistSpec, digits: MnistDigits) -> dict[str, tuple[str, np.ndarray, list[np.ndarray]]]:
    """split -> (MNIST part, its images, per digit class the indices a split may draw).

    No digit instance is shared between splits. Val and test take alternate digits of each
    class, not the two halves of the file: MNIST's first 5,000 test digits are cleaner than
    the last 5,000, and a user's file may be sorted by label; alternating within a class
    gives both splits the same mix and every class.
    """
    test_by_class = [np.flatnonzero(digits.test_labels == d) for d in range(10)]
    pools = {"train": ("train", digits.train_images, [np.flatnonzero(digits.train_labels == d) for d in range(10)])}
    if spec.test_fraction > 0:
        pools["val"] = ("test", digits.test_images, [idx[0::2] for idx in test_by_class])
        pools["test"] = ("test", digits.test_images, [idx[1::2] for idx in test_by_class])
    else:  # as before the test split existed, so old sets are rebuilt identically
        pools["val"] = ("test", digits.test_images, test_by_class)
    for split, (_, _, by_class) in pools.items():
        missing = [d for d in range(10) if len(by_class[d]) == 0]
        if missing:
            raise UsageError(f"{digits.origin}: no {split} digits of class {missing[0]}")
    return pools


def build_multi_mnist(spec: MultiMnistSpec, digits: MnistDigits, out: Path | str, overwrite: bool = False,
                      progress: bool = True) -> Path:
    """Build a Multi-MNIST dataset at ``out`` (atomically), with ``provenance.json`` of the digits used."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    sizes = spec.split_sizes()
    if sizes["train"] < 1:
        raise UsageError("num: too few images for a training split")
    pools = digit_pools(spec, digits)
    halves = spec.test_fraction > 0
    info = DatasetInfo(
        name=f"multi-mnist-{spec.variant}",
        image_size=(spec.size, spec.size),
        channels=1,
        classes=class_infos(),
        splits={"train": [], "val": [], "test": []},
        source={
            "builder": "multi-mnist",
            "variant": spec.variant,
            "seed": spec.seed,
            "num": spec.num,
            "digit_size": [spec.digit_min, spec.digit_max],
            "digits": digits.origin,
            "train_digits": "MNIST training set only",
            "val_digits": ("MNIST test set: 1st, 3rd, 5th, ... digit of each class" if halves
                           else "MNIST test set only"),
            "test_digits": ("MNIST test set: 2nd, 4th, 6th, ... digit of each class (none shared with val)"
                            if halves else "no test split"),
            "val_fraction": spec.val_fraction,
            "test_fraction": spec.test_fraction,
            "provenance": "provenance.json: per image id its MNIST part and digit indices",
            "layout": "each digit's tight box filled with its class; stroke masks in masks/",
        },
        rule=rule_for(spec),
        # Flips and quarter turns change what a digit is (a mirrored 7, a turned 6 = 9); small
        # rotations, scalings and shifts do not.
        augmentations=["affine"],
    )
    provenance: dict[str, dict] = {}
    with DatasetWriter(out, info, overwrite=overwrite) as writer:
        # Train first: the random stream then gives the same training images as builds made
        # before the test split existed, for the same seed and number of training images.
        plan = [split for split in ("train", "val", "test") for _ in range(sizes[split])]
        for split in tqdm(plan, desc=f"multi-mnist {spec.variant}", unit="img", disable=not progress):
            part, images, by_class = pools[split]
            image, layout, mask, objects, used = compose_image(spec, rng, images, by_class)
            image_id = writer.add(split, image, layout, objects=objects, mask=mask)
            provenance[str(image_id)] = {"source": f"mnist-{part}", "digits": used}
        (writer.tmp / PROVENANCE_FILE).write_text(json.dumps({"images": provenance}))
    return Path(out)


def make_multi_mnist(spec: MultiMnistSpec, out: Path | str, mnist: Path | str | None = None,
                     overwrite: bool = False, progress: bool = True) -> Path:
    """`msgnet data build multi-mnist` as a library call: check the output and the digits' source before
    any work, read the digits (``mnist``: a folder of the four IDX files or an .npz; None: the bundled
    MNIST), build. Paths may be ``str`` or ``Path``; ``overwrite`` replaces only a dataset msgnet wrote."""
    from msgnet.data.mnist_source import load_bundled, load_user_mnist
    from msgnet.io import prepare_output_dir

    if not isinstance(spec, MultiMnistSpec):
        raise UsageError(f"spec: a MultiMnistSpec, not {type(spec).__name__}")
    if mnist is not None and not Path(mnist).exists():
        raise UsageError(f"mnist {mnist}: no such file or folder")
    prepare_output_dir(out, overwrite, [mnist] if mnist is not None else [])
    digits = load_user_mnist(mnist) if mnist is not None else load_bundled()
    return build_multi_mnist(spec, digits, out, overwrite=overwrite, progress=progress)
