"""Reading a dataset in the msgnet format, validating every file it reads (msgnet.data.format)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from msgnet.errors import DataError, UsageError
from msgnet.io import atomic_path, read_json, why_not_found
from msgnet.layouts.boxes import ObjectAnnotation
from msgnet.data.schema import DatasetInfo, image_name

# A decoded image of these modes is not pixel values; it is converted as the importers convert it.
_IMAGE_MODES = {1: "L", 2: "LA", 3: "RGB"}


def _read_png(path: Path, channels: int | None = None) -> np.ndarray:
    """The PNG's pixels; with ``channels`` (an image, not a class map) a palette, bilevel or other
    non-pixel mode is converted to the dataset's L / LA / RGB instead of read as raw indices."""
    if not path.is_file():
        raise DataError(f"{path}: {why_not_found(path)}")
    try:
        with Image.open(path) as im:
            im.load()
            if channels is not None and im.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I", "F"):
                im = im.convert(_IMAGE_MODES.get(channels, "RGB"))
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
        img = image_to_array(_read_png(path, self.info.channels), self.info.channels)
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
        """The cache's name: a hash of dataset.json and of every file of the split (name, size and
        modification time), so that a PNG edited in place is read again rather than served stale."""
        import hashlib

        h = hashlib.sha1((self.root / "dataset.json").read_bytes())
        for sub in ("images", "masks" if masks else "layouts"):
            for image_id in self.info.splits.get(split, []):
                try:
                    st = (self.root / sub / image_name(image_id)).stat()
                    h.update(f"{sub}/{image_id}:{st.st_size}:{st.st_mtime_ns}".encode())
                except OSError:
                    h.update(f"{sub}/{image_id}:missing".encode())  # reading it will say what is wrong
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
