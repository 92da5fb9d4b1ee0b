"""Boxes to class maps and back (connected components)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ObjectAnnotation:
    """One object: its class and its box ``[x, y, w, h]`` in pixels."""

    category_id: int
    bbox: tuple[int, int, int, int]


def boxes_to_layout(
    objects: Sequence[ObjectAnnotation | tuple[int, Sequence[float]]],
    size: tuple[int, int],
) -> np.ndarray:
    """Fill each box ``[x, y, w, h]`` with its class at full resolution; later objects over earlier.

    Boxes are clipped to the image. Returns an (H, W) uint8 class map (0 = background).
    """
    h, w = size
    layout = np.zeros((h, w), dtype=np.uint8)
    for obj in objects:
        cid, bbox = (obj.category_id, obj.bbox) if isinstance(obj, ObjectAnnotation) else obj
        x, y, bw, bh = (float(v) for v in bbox)
        x0, y0 = max(int(round(x)), 0), max(int(round(y)), 0)
        x1, y1 = min(int(round(x + bw)), w), min(int(round(y + bh)), h)
        if x1 > x0 and y1 > y0:
            layout[y0:y1, x0:x1] = cid
    return layout


def coco_box(value: Any, image_size: tuple[int, int], where: str) -> tuple[float, float, float, float]:
    """A COCO ``[x, y, w, h]`` a user handed us, checked: four finite numbers, no negative size,
    some part inside the ``(H, W)`` image (a box wholly outside would silently lose its object)."""
    from msgnet.errors import DataError

    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise DataError(f"{where}: bbox must be [x, y, w, h], got {value!r:.60}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise DataError(f"{where}: bbox must hold four finite numbers, got {value!r:.60}")
    x, y, bw, bh = (float(v) for v in value)
    if bw < 0 or bh < 0:
        raise DataError(f"{where}: bbox has a negative size")
    h, w = image_size
    if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
        raise DataError(f"{where}: bbox {[x, y, bw, bh]} lies wholly outside its {w}x{h} image")
    return x, y, bw, bh


def coco_id(value: Any, what: str, where: str) -> int:
    """An integer id of a COCO file (``category_id``, ``image_id``): a string or a fraction is refused."""
    from msgnet.errors import DataError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise DataError(f"{where}: {what} must be an integer, got {value!r:.40}")
    return int(value)


def coco_size(image: dict[str, Any], key: str, default: int, where: str) -> int:
    """``width``/``height`` of a COCO image entry (``default`` when absent): a positive integer."""
    from msgnet.errors import DataError

    value = image.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1 or not float(value).is_integer():
        raise DataError(f"{where}: {key} must be a positive integer, got {value!r:.40}")
    return int(value)


def layout_to_objects(layout: np.ndarray, min_pixels: int = 1) -> list[ObjectAnnotation]:
    """One object per 8-connected component of each class, with its tight box.

    This turns a sampled layout back into annotations. Objects are ordered by class, then
    by position (top-left first), so the result is deterministic.
    """
    objects: list[ObjectAnnotation] = []
    structure = np.ones((3, 3), dtype=bool)
    for cid in np.unique(layout):
        if cid == 0:
            continue
        labels, n = ndimage.label(layout == cid, structure=structure)
        for sl, idx in zip(ndimage.find_objects(labels), range(1, n + 1)):
            if sl is None:
                continue
            if min_pixels > 1 and int((labels[sl] == idx).sum()) < min_pixels:
                continue
            ys, xs = sl
            objects.append(ObjectAnnotation(int(cid), (xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)))
    objects.sort(key=lambda o: (o.category_id, o.bbox[1], o.bbox[0]))
    return objects


def boxes_overlap(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether two ``[x, y, w, h]`` boxes share at least one pixel."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
