"""Writing a dataset in the msgnet format: PNG files, the COCO document, and whole sets written
atomically (msgnet.data.format)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from msgnet.errors import UsageError
from msgnet.io import current_umask, failures_named, fsync_dir, is_msgnet_dataset
from msgnet.layouts.boxes import ObjectAnnotation, layout_to_objects
from msgnet.data.schema import DatasetInfo, image_name

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


def _write_synced(path: Path, text: str) -> None:
    """Write ``text`` and flush it to disk: the folder is renamed into place next, and a crash after the
    rename must not leave an empty dataset.json."""
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


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
            raise UsageError(f"{self.root}: already exists (choose another `out` or remove it)")
        self.info = info
        self.info.splits = {s: list(v) for s, v in info.splits.items()}
        self.objects: dict[int, list[ObjectAnnotation]] = {}
        self.root.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(self.root)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.root.name}.", dir=self.root.parent))
        os.chmod(self.tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; the dataset gets the usual mode
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
        with failures_named(self.root):  # a full disk: name the dataset being written, not our temporary
            write_files(self.tmp, image_id, image, layout, mask)
        self.info.splits.setdefault(split, []).append(image_id)
        self.objects[image_id] = list(objects) if objects is not None else layout_to_objects(layout)
        return image_id

    def close(self) -> Path:
        if not any(self.info.splits.values()):
            self.abort()
            raise UsageError(f"{self.root}: refusing to write an empty dataset")
        _write_synced(self.tmp / "annotations.json", json.dumps(coco_document(self.info, self.objects)))
        _write_synced(self.tmp / "dataset.json", json.dumps(self.info.to_json(), indent=2))
        if self.root.exists():
            if not is_msgnet_dataset(self.root):  # never delete what msgnet did not write
                self.abort()
                raise UsageError(f"{self.root}: exists and is not a dataset msgnet wrote; not replaced")
            shutil.rmtree(self.root)
        os.replace(self.tmp, self.root)
        fsync_dir(self.root.parent)  # the rename is durable once the folder holding it is
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
