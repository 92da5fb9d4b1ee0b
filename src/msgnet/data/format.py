"""The one dataset format on disk, read and written by every msgnet command.

```
DIR/dataset.json        classes, colours, image size, channels, splits, provenance, rule, augmentations
DIR/images/NNNNNN.png   the images (L, LA or RGB; 2-channel images are stored as LA)
DIR/layouts/NNNNNN.png  uint8 class index per pixel, 0 = background
DIR/masks/NNNNNN.png    optional: finer per-pixel masks (e.g. digit strokes), same classes
DIR/annotations.json    COCO-compatible: images, annotations (category_id, bbox [x, y, w, h]), categories
```

Splits: ``train``, ``val`` and ``test``. Older sets have only train and val, and a split
may be empty (``--test-fraction 0``), so readers ask :meth:`Dataset.evaluation_splits`
which split to select on and which to report on instead of assuming a test split.

Every reader validates what it reads and raises :class:`DataError` naming the file.
Writers build the whole set in a temporary sibling directory and rename it into place,
so an interrupted build never leaves a half-written dataset behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from msgnet.errors import DataError, UsageError
from msgnet.io import atomic_path, is_msgnet_dataset, read_json, why_not_found
from msgnet.layouts.boxes import ObjectAnnotation, layout_to_objects  # noqa: F401 (ObjectAnnotation is part of the format's API)

FORMAT_NAME = "msgnet-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
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


def parse_augmentations(text: str, where: str = "--augmentations") -> list[str]:
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


def _read_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: {why_not_found(path)}")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im)
    except Exception as exc:  # Pillow raises many kinds for corrupt files
        raise DataError(f"{path}: unreadable image ({type(exc).__name__})") from None


def image_to_array(img: np.ndarray, channels: int) -> np.ndarray:
    """Normalise a decoded image to (H, W, C) uint8."""
    if img.ndim == 2:
        img = img[:, :, None]
    return img


class Dataset:
    """A dataset on disk in the msgnet format. Open with :func:`open_dataset`."""

    def __init__(self, root: Path, info: DatasetInfo):
        self.root = root
        self.info = info

    # -- paths -----------------------------------------------------------------
    def image_path(self, image_id: int) -> Path:
        return self.root / "images" / image_name(image_id)

    def layout_path(self, image_id: int) -> Path:
        return self.root / "layouts" / image_name(image_id)

    def mask_path(self, image_id: int) -> Path:
        return self.root / "masks" / image_name(image_id)

    @property
    def has_masks(self) -> bool:
        return (self.root / "masks").is_dir()

    def evaluation_splits(self) -> tuple[str | None, str]:
        """(selection split, test split): where to choose checkpoints or settings, where to report.

        ``("val", "test")`` when the set has a non-empty test split; ``(None, "test")`` when it
        has a test split but an empty val (``--val-fraction 0``): nothing to select on.
        Otherwise ``(None, "val")``: sets written before the test split existed (or with
        ``--test-fraction 0``) have only val, which then serves as the test split, and nothing
        may be selected on it, or the reported figure would be optimistic.
        """
        splits = self.info.splits
        if splits.get("test"):
            return ("val" if splits.get("val") else None), "test"
        return None, "val"

    def ids(self, split: str) -> list[int]:
        if split not in self.info.splits:
            raise UsageError(f"{self.root}: no split {split!r} (has {', '.join(self.info.splits)})")
        return self.info.splits[split]

    # -- reading with validation -----------------------------------------------
    def read_image(self, image_id: int) -> np.ndarray:
        """(H, W, C) uint8, checked against dataset.json."""
        path = self.image_path(image_id)
        img = image_to_array(_read_png(path), self.info.channels)
        h, w = self.info.image_size
        if img.shape[:2] != (h, w):
            raise DataError(f"{path}: size {img.shape[1]}x{img.shape[0]} differs from dataset.json ({w}x{h})")
        if img.shape[2] != self.info.channels:
            raise DataError(f"{path}: {img.shape[2]} channels, dataset.json says {self.info.channels}")
        if img.dtype != np.uint8:
            raise DataError(f"{path}: expected 8-bit pixels, got {img.dtype}")
        return img

    def _read_class_map(self, path: Path) -> np.ndarray:
        lay = _read_png(path)
        h, w = self.info.image_size
        if lay.ndim != 2 or lay.dtype != np.uint8:
            raise DataError(f"{path}: a layout must be a single-channel 8-bit class-index PNG")
        if lay.shape != (h, w):
            raise DataError(f"{path}: size {lay.shape[1]}x{lay.shape[0]} differs from its image ({w}x{h})")
        known = np.zeros(256, dtype=bool)
        known[[c.id for c in self.info.classes]] = True
        present = np.unique(lay)
        unknown = present[~known[present]]
        if unknown.size:
            raise DataError(f"{path}: class id {int(unknown[0])} is not declared in dataset.json")
        return lay

    def read_layout(self, image_id: int) -> np.ndarray:
        """(H, W) uint8 class indices, checked against dataset.json."""
        return self._read_class_map(self.layout_path(image_id))

    def read_mask(self, image_id: int) -> np.ndarray:
        return self._read_class_map(self.mask_path(image_id))

    def load_split(self, split: str, masks: bool = False, cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All images (N, H, W, C) and layouts (N, H, W) of a split, uint8, validated.

        Decoding tens of thousands of small PNGs is slow on a cold disk, so the validated
        arrays are kept in ``DIR/.cache/`` under a key made of dataset.json and the folders'
        modification times (adding, removing or renaming files changes it). After editing
        images in place, delete ``DIR/.cache``; ``msgnet data info`` always reads every file.
        """
        ids = self.ids(split)
        if not ids:
            raise DataError(f"{self.root / 'dataset.json'}: split {split!r} is empty")
        cache_file = self._cache_file(split, masks) if cache else None
        if cache_file is not None and cache_file.is_file():
            try:
                with np.load(cache_file, allow_pickle=False) as z:
                    return z["images"], z["layouts"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt below
        read_lay = self.read_mask if masks else self.read_layout
        # Threads overlap the file reads (the decoding itself is cheap).
        with ThreadPoolExecutor(max_workers=16) as pool:
            images = np.stack(list(pool.map(self.read_image, ids)))
            layouts = np.stack(list(pool.map(read_lay, ids)))
        if cache_file is not None:
            try:
                cache_file.parent.mkdir(exist_ok=True)
                for old in cache_file.parent.glob(f"{split}{'-masks' if masks else ''}-*.npz"):
                    old.unlink()
                with atomic_path(cache_file) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, images=images, layouts=layouts)
            except OSError:
                pass  # a read-only dataset simply is not cached
        return images, layouts

    def _cache_file(self, split: str, masks: bool) -> Path:
        import hashlib

        h = hashlib.sha1((self.root / "dataset.json").read_bytes())
        for sub in ("images", "masks" if masks else "layouts"):
            st = (self.root / sub).stat() if (self.root / sub).exists() else None
            h.update(f"{sub}:{st.st_mtime_ns if st else 0}:{st.st_ino if st else 0}".encode())
        return self.root / ".cache" / f"{split}{'-masks' if masks else ''}-{h.hexdigest()[:16]}.npz"

    def annotations(self) -> dict[int, list[ObjectAnnotation]]:
        """Objects per image id from annotations.json, validated against the declared classes."""
        path = self.root / "annotations.json"
        if not path.is_file():
            raise DataError(f"{path}: {why_not_found(path)}")
        try:
            data = json.loads(path.read_text())
            anns = data["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}: not a COCO-style annotation file") from None
        known = {c.id for c in self.info.classes}
        out: dict[int, list[ObjectAnnotation]] = {}
        for a in anns:
            try:
                cid, bbox, iid = int(a["category_id"]), [int(round(v)) for v in a["bbox"]], int(a["image_id"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path}: malformed annotation {a!r:.80}") from None
            if cid not in known or cid == 0:
                raise DataError(f"{path}: category_id {cid} is not an object class declared in dataset.json")
            if len(bbox) != 4:
                raise DataError(f"{path}: bbox of annotation {a.get('id')} must be [x, y, w, h]")
            out.setdefault(iid, []).append(ObjectAnnotation(cid, tuple(bbox)))  # type: ignore[arg-type]
        return out


def open_dataset(root: Path | str) -> Dataset:
    """Open and validate ``root/dataset.json``."""
    root = Path(root)
    meta = root / "dataset.json"
    if not root.is_dir():
        raise DataError(f"{root}: {why_not_found(root, 'folder')}")
    if not meta.is_file():
        raise DataError(f"{meta}: {why_not_found(meta)} (not a msgnet dataset; see `msgnet data import`)")
    info = DatasetInfo.from_json(read_json(meta), str(meta))
    if not any(info.splits.values()):
        raise DataError(f"{meta}: the dataset is empty (no images in any split)")
    return Dataset(root, info)


def coco_document(info: DatasetInfo, objects: dict[int, list[ObjectAnnotation]]) -> dict[str, Any]:
    """A COCO-compatible annotation document (background is not a category)."""
    h, w = info.image_size
    images, anns = [], []
    split_of = {i: s for s, ids in info.splits.items() for i in ids}
    for iid in sorted(split_of):
        images.append({"id": iid, "file_name": f"images/{image_name(iid)}", "width": w, "height": h,
                       "split": split_of[iid]})
        for obj in objects.get(iid, []):
            x, y, bw, bh = obj.bbox
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": obj.category_id,
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
    cats = [{"id": c.id, "name": c.name} for c in info.classes if c.id != 0]
    return {"images": images, "annotations": anns, "categories": cats}


def _to_pil(img: np.ndarray) -> Image.Image:
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return Image.fromarray(img, mode="L")
    if img.shape[2] == 2:
        return Image.fromarray(img, mode="LA")
    return Image.fromarray(img, mode="RGB")


def write_files(root: Path, image_id: int, image: np.ndarray, layout: np.ndarray,
                mask: np.ndarray | None = None) -> None:
    """Write one image, its layout and optional mask as PNGs under ``root`` (the format's file layout)."""
    name = image_name(image_id)
    _to_pil(image.astype(np.uint8)).save(root / "images" / name, compress_level=1)
    Image.fromarray(layout.astype(np.uint8), mode="L").save(root / "layouts" / name, compress_level=1)
    if mask is not None:
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "masks" / name, compress_level=1)


TMP_PREFIX = ".msgnet-partial."  # a dataset being written; one left by a killed process is removed later


def _remove_stale_temporaries(root: Path) -> None:
    """Remove what a killed writer of ``root`` left: ``.msgnet-partial.<name>.*`` folders beside it."""
    for leftover in root.parent.glob(f"{TMP_PREFIX}{root.name}.*"):
        if leftover.is_dir() and not leftover.is_symlink() and (leftover / "images").is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


class DatasetWriter:
    """Write a dataset atomically: everything goes to a temporary sibling directory, renamed on close.

    Use as a context manager; an exception inside the block removes the partial set.
    (Resumable sampling streams into ``OUT.partial/`` instead: msgnet.sampling.pipeline.)
    """

    def __init__(self, root: Path | str, info: DatasetInfo, overwrite: bool = False):
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise UsageError(f"{self.root}: already exists (choose another --out or remove it)")
        self.info = info
        self.info.splits = {s: list(v) for s, v in info.splits.items()}
        self.objects: dict[int, list[ObjectAnnotation]] = {}
        self.root.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(self.root)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.root.name}.", dir=self.root.parent))
        for sub in ("images", "layouts"):
            (self.tmp / sub).mkdir()
        self._next_id = 0
        self._closed = False

    def add(
        self,
        split: str,
        image: np.ndarray,
        layout: np.ndarray,
        objects: Sequence[ObjectAnnotation] | None = None,
        mask: np.ndarray | None = None,
    ) -> int:
        """Add one image (H, W[, C] uint8) with its layout; objects default to the layout's components."""
        h, w = self.info.image_size
        if image.shape[:2] != (h, w) or layout.shape != (h, w):
            raise UsageError(f"image/layout of shape {image.shape}/{layout.shape} does not match {h}x{w}")
        image_id = self._next_id
        self._next_id += 1
        write_files(self.tmp, image_id, image, layout, mask)
        self.info.splits.setdefault(split, []).append(image_id)
        self.objects[image_id] = list(objects) if objects is not None else layout_to_objects(layout)
        return image_id

    def close(self) -> Path:
        if not any(self.info.splits.values()):
            self.abort()
            raise UsageError(f"{self.root}: refusing to write an empty dataset")
        (self.tmp / "annotations.json").write_text(json.dumps(coco_document(self.info, self.objects)))
        (self.tmp / "dataset.json").write_text(json.dumps(self.info.to_json(), indent=2))
        if self.root.exists():
            if not is_msgnet_dataset(self.root):  # never delete what msgnet did not write
                self.abort()
                raise UsageError(f"{self.root}: exists and is not a dataset msgnet wrote; not replaced")
            shutil.rmtree(self.root)
        os.replace(self.tmp, self.root)
        self._closed = True
        return self.root

    def abort(self) -> None:
        if not self._closed and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
