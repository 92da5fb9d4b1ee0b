"""Boxes to class maps and back (connected components)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
