"""What a dataset.json says: classes, image size, splits, provenance, rule, augmentations (msgnet.data.format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from msgnet.errors import DataError, UsageError



FORMAT_NAME = "msgnet-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
MAX_IMAGES = 10_000_000  # one build; far past any CPU budget, and refused before any list is built
# Geometric augmentations a dataset may declare valid for its images ("augmentations" in
# dataset.json). Whether one is valid depends on the data, not the model: flipping a "7"
# or turning a "6" by 180 degrees changes what it is, a microscopy tile has no "up".
GEOMETRIC_AUGMENTATIONS = (
    "flip",  # horizontal and vertical flips
    "rotate90",  # rotations by multiples of 90 degrees
    "affine",  # small rotation / scale / shift: valid for almost any data, digits included
)


def check_augmentations(value: Any, where: str) -> list[str] | None:
    """The "augmentations" of dataset.json: None (not declared) or a list of known names."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: \"augmentations\" must be a list of names, got {value!r:.80}")
    return _known_augmentations(value, lambda msg: DataError(f"{where}: \"augmentations\": {msg}"))


def parse_augmentations(text: str, where: str = "augmentations") -> list[str]:
    """``flip,rotate90,affine`` -> the list; ``none`` -> [] (declared: no geometric augmentation is valid)."""
    if text.strip().lower() == "none":
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UsageError(f"{where}: give names from {', '.join(GEOMETRIC_AUGMENTATIONS)}, or none")
    return _known_augmentations(names, lambda msg: UsageError(f"{where}: {msg}"))


def _known_augmentations(names: list[str], error: Callable[[str], Exception]) -> list[str]:
    for name in names:
        if name not in GEOMETRIC_AUGMENTATIONS:
            raise error(f"unknown {name!r} (known: {', '.join(GEOMETRIC_AUGMENTATIONS)})")
    if len(set(names)) != len(names):
        raise error(f"lists a name twice ({', '.join(names)})")
    return list(names)


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]


@dataclass
class DatasetInfo:
    """The contents of ``dataset.json``."""

    name: str
    image_size: tuple[int, int]  # (height, width)
    channels: int
    classes: list[ClassInfo]  # class 0 is the background
    splits: dict[str, list[int]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # how the set was made
    rule: dict[str, Any] | None = None  # see msgnet.data.rules
    # Which GEOMETRIC_AUGMENTATIONS keep an image valid (its layout transformed alike);
    # None: not declared (sets written before the field existed), [] declared: none.
    augmentations: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return max(c.id for c in self.classes) + 1

    @property
    def class_names(self) -> list[str]:
        names = ["?"] * self.num_classes
        for c in self.classes:
            names[c.id] = c.name
        return names

    @property
    def palette(self) -> np.ndarray:
        pal = np.zeros((self.num_classes, 3), dtype=np.uint8)
        for c in self.classes:
            pal[c.id] = c.color
        return pal

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "image_size": list(self.image_size),
            "channels": self.channels,
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes],
            "splits": {k: list(v) for k, v in self.splits.items()},
            "source": self.source,
            "rule": self.rule,
            "augmentations": None if self.augmentations is None else list(self.augmentations),
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> "DatasetInfo":
        def bad(msg: str) -> DataError:
            return DataError(f"{where}: {msg}")

        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise bad(f"not a {FORMAT_NAME} description (missing \"format\": \"{FORMAT_NAME}\")")
        for key, kind in (("splits", dict), ("source", dict), ("classes", list), ("image_size", list)):
            value = data.get(key)
            if value is not None and not isinstance(value, kind):
                raise bad(f"\"{key}\" must be {'a mapping' if kind is dict else 'a list'}, got {type(value).__name__}")
        try:
            h, w = (int(v) for v in data["image_size"])
            channels = int(data["channels"])
            classes = [
                ClassInfo(int(c["id"]), str(c["name"]), tuple(int(x) for x in c["color"]))  # type: ignore[arg-type]
                for c in data["classes"]
            ]
            splits = {str(k): [int(i) for i in v] for k, v in (data.get("splits") or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"malformed field ({type(exc).__name__}: {exc})") from None
        if h < 1 or w < 1:
            raise bad(f"image_size must be positive, got {h}x{w}")
        if channels not in (1, 2, 3):
            raise bad(f"channels must be 1, 2 or 3, got {channels}")
        ids = [c.id for c in classes]
        if 0 not in ids:
            raise bad("class 0 (background) must be declared")
        if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) > 255:
            raise bad("class ids must be unique and within 0..255")
        if any(len(c.color) != 3 for c in classes):
            raise bad("every class colour must be [r, g, b]")
        if any(not 0 <= v <= 255 for c in classes for v in c.color):
            raise bad("every class colour must be [r, g, b] with values 0..255")
        return cls(
            name=str(data.get("name", "")),
            image_size=(h, w),
            channels=channels,
            classes=classes,
            splits=splits,
            source=dict(data.get("source") or {}),
            rule=data.get("rule"),
            augmentations=check_augmentations(data.get("augmentations"), where),
        )


def image_name(image_id: int) -> str:
    return f"{image_id:06d}.png"
